//! A node's log file with size-bounded retention: past `max_bytes` the file is renamed
//! `{node}.log.1` (older ones shift to `.2` … `.{keep}`, the oldest is dropped) and a fresh
//! file is started, so a chatty or crash-looping node cannot fill the disk.
//!
//! A node's stdout and stderr write through one shared [`LogFile`], so rotation sees every
//! byte. Writes are plain blocking appends of one record (at most a few KiB) to a local file.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// How much of a node's log is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Size at which the current file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
}

impl Default for Retention {
    /// 10 MiB × (1 + 3) files: about 40 MiB per node at most.
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// One node's log, rotated by [`Retention`]; files are created 0600.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    retention: Retention,
}

/// The handle a node's stream pumps share.
pub type SharedLogFile = Arc<Mutex<LogFile>>;

/// The path of the `n`th rotated file of `path` (`node.log.1`, …).
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl LogFile {
    /// Opens `path` for appending (creating it 0600), counting what it already holds.
    pub fn open(path: &Path, retention: Retention) -> io::Result<Self> {
        let file = crate::private::append_file(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            retention,
        })
    }

    /// Appends one record, rotating first when it would take the file past the limit.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.retention.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.retention.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.retention.keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = crate::private::append_file(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn rotation_keeps_at_most_keep_files_of_at_most_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n-0.log");
        let retention = Retention {
            max_bytes: 100,
            keep: 2,
        };
        let mut log = LogFile::open(&path, retention).unwrap();
        for i in 0..50 {
            log.append(format!("record {i:02} padded to thirty b\n").as_bytes())
                .unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let one = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        let two = std::fs::read_to_string(rotated(&path, 2)).unwrap();
        assert!(!rotated(&path, 3).exists());
        for text in [&current, &one, &two] {
            assert!(text.len() <= 100, "{text}");
        }
        // Newest in the current file, the next older ones in .1 then .2, none lost between.
        assert!(
            current.ends_with("record 49 padded to thirty b\n"),
            "{current}"
        );
        let all = format!("{two}{one}{current}");
        let numbers: Vec<u32> = all.lines().map(|l| l[7..9].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        for p in [path.clone(), rotated(&path, 1)] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn reopening_counts_what_the_file_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n-0.log");
        let retention = Retention {
            max_bytes: 10,
            keep: 1,
        };
        LogFile::open(&path, retention)
            .unwrap()
            .append(b"12345678\n")
            .unwrap();
        let mut again = LogFile::open(&path, retention).unwrap();
        again.append(b"abc\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(rotated(&path, 1)).unwrap(),
            "12345678\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc\n");
    }
}
