//! The PostgreSQL programs (`initdb`, `postgres`, `pg_dump`): where they are, and running one
//! to its end with an error that never shows its environment.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use super::DbError;

/// Where the PostgreSQL programs are.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// Directory holding `initdb`, `postgres`, `pg_dump` (empty: found on PATH).
    pub bin: PathBuf,
}

impl PgTools {
    /// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`, else `initdb` on PATH.
    pub fn find() -> Result<Self, DbError> {
        let mut best: Option<(u32, PathBuf)> = None;
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            for e in entries.flatten() {
                let major = e.file_name().to_string_lossy().parse::<u32>().ok();
                let bin = e.path().join("bin");
                if let Some(major) = major {
                    if bin.join("initdb").is_file() && best.as_ref().is_none_or(|b| b.0 < major) {
                        best = Some((major, bin));
                    }
                }
            }
        }
        if let Some((_, bin)) = best {
            return Ok(Self { bin });
        }
        let on_path = std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p)
                .any(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        });
        if on_path {
            Ok(Self {
                bin: PathBuf::new(),
            })
        } else {
            Err(DbError::NotInstalled)
        }
    }

    pub(super) fn program(&self, name: &str) -> PathBuf {
        if self.bin.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.bin.join(name)
        }
    }
}

/// Runs `cmd` to its end. Errors name the program and its arguments, never its environment
/// (`pg_dump` gets the password there).
pub(super) fn run(cmd: &mut Command) -> Result<Output, DbError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd.output().map_err(|e| DbError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(DbError::Command { command, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_is_reported_without_its_environment() {
        let err = run(Command::new("false")
            .arg("--flag")
            .env("PGPASSWORD", "s3cret"))
        .expect_err("false fails");
        let text = err.to_string();
        assert!(text.contains("false --flag"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
