//! Running one build locally: the builder's source checked out into a fresh work directory
//! (a local directory copied, a git URL cloned at depth 1), the configured build command run
//! there as a child process (`sh -c COMMAND`, bounded in time), its output kept as the build's
//! [`BuildLog`], and the artifact it leaves at `$KANMON_BUILD_OUTPUT` stored by its SHA-256
//! digest in the builds directory. The stored path is the build's image reference: the local
//! driver can run it as the node program.
//!
//! The command gets `KANMON_BUILD_VERSION` (the Nakama version to compile against),
//! `KANMON_BUILD_SOURCE` (the checkout) and `KANMON_BUILD_OUTPUT`; nothing of the control
//! plane's environment beyond `PATH` and `HOME`, so no token or secret reaches it.

use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sha2::{Digest, Sha256};
use tokio::{io::AsyncReadExt, process::Command};

use crate::domain::build::{BuildLog, BuildSource, Builder, BUILD_LOG_LIMIT};

/// How builds run.
#[derive(Debug, Clone)]
pub struct LocalBuildConfig {
    /// The build command, run by `sh -c` in the checkout.
    pub command: String,
    /// Work directories (one per build, removed after it) and stored artifacts.
    pub dir: PathBuf,
    /// How long a build may take, checkout included.
    pub timeout: Duration,
    /// Successful builds whose artifacts are kept per builder (older ones are removed,
    /// unless the deployment's current spec runs one).
    pub keep: usize,
    /// How a build runs as a Kubernetes Job (ignored by the local runner).
    pub job: JobSettings,
}

/// `[builds]` keys of the Kubernetes runner: the Job's images and its bounded resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// The image that runs the build command; `{version}` is replaced by the builder's
    /// version (the Nakama version to compile against, like Heroic Labs' pluginbuilder).
    pub image: String,
    /// The image of the init step that clones a git source (must have `git`).
    pub git_image: String,
    /// CPU request and limit of the build container (a Kubernetes quantity).
    pub cpu: String,
    /// Memory request and limit of the build container (a Kubernetes quantity).
    pub memory: String,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            image: "heroiclabs/nakama-pluginbuilder:{version}".into(),
            git_image: "alpine/git:2.47.2".into(),
            cpu: "1".into(),
            memory: "2Gi".into(),
        }
    }
}

/// Successful builds kept per builder by default.
pub const DEFAULT_KEEP: usize = 5;

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// `Ok(image)`: the stored artifact's path; `Err(why)`: what failed.
    pub result: Result<String, String>,
    /// The SHA-256 of the artifact (hex), when there is one.
    pub digest: Option<String>,
    /// The output of checkout and command.
    pub log: BuildLog,
}

fn fail(log: BuildLog, why: String) -> BuildOutcome {
    BuildOutcome {
        result: Err(why),
        digest: None,
        log,
    }
}

/// Runs build `id` of `builder` (see the module docs). Never panics on a bad source or command:
/// every failure is an outcome with its log.
pub async fn run_build(cfg: &LocalBuildConfig, builder: &Builder, id: u64) -> BuildOutcome {
    let work = cfg.dir.join("work").join(format!("{}-{id}", builder.name));
    let mut log = BuildLog::with_limit(BUILD_LOG_LIMIT);
    let outcome =
        match tokio::time::timeout(cfg.timeout, build_in(cfg, builder, &work, &mut log)).await {
            Ok(Ok((image, digest))) => BuildOutcome {
                result: Ok(image),
                digest: Some(digest),
                log,
            },
            Ok(Err(why)) => fail(log, why),
            Err(_) => fail(log, format!("the build took longer than {:?}", cfg.timeout)),
        };
    if let Err(e) = std::fs::remove_dir_all(&work) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %work.display(), error = %e, "removing a build's work directory");
        }
    }
    outcome
}

async fn build_in(
    cfg: &LocalBuildConfig,
    builder: &Builder,
    work: &Path,
    log: &mut BuildLog,
) -> Result<(String, String), String> {
    let src = work.join("src");
    let out = work.join("output");
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    }
    crate::private::create_dir(work).map_err(|e| format!("{}: {e}", work.display()))?;
    match &builder.source {
        BuildSource::Directory(dir) => {
            log.push(format!("copying {}\n", dir.display()).as_bytes());
            let mut cp = Command::new("cp");
            cp.arg("-R").arg("--").arg(dir).arg(&src);
            run(cp, log).await?;
        }
        BuildSource::Git(url) => {
            log.push(format!("cloning {url}\n").as_bytes());
            let mut git = Command::new("git");
            // `--` ends the options: the URL can never be read as one; no prompt for a
            // password, no transport that runs a command.
            git.args([
                "-c",
                "protocol.ext.allow=never",
                "clone",
                "--depth",
                "1",
                "--",
            ])
            .arg(url)
            .arg(&src)
            .env("GIT_TERMINAL_PROMPT", "0");
            run(git, log).await?;
        }
    }
    log.push(format!("running: {}\n", cfg.command).as_bytes());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&cfg.command)
        .current_dir(&src)
        .env("KANMON_BUILD_VERSION", builder.version.to_string())
        .env("KANMON_BUILD_SOURCE", &src)
        .env("KANMON_BUILD_OUTPUT", &out);
    run(cmd, log).await?;
    store(cfg, builder, &out)
}

/// Runs `cmd` with a clean environment (only `PATH` and `HOME` kept, plus what the caller
/// set), its stdout and stderr appended to `log`; an error unless it exits with 0.
async fn run(mut cmd: Command, log: &mut BuildLog) -> Result<(), String> {
    let keep: Vec<(String, String)> = ["PATH", "HOME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let set: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)> = cmd
        .as_std()
        .get_envs()
        .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
        .collect();
    cmd.env_clear().envs(keep);
    for (k, v) in set {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let name = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, killed whole when the build ends early (timeout): what the
        // command started goes with it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let _group = child.id().map(Group);
    let (mut stdout, mut stderr) = (
        child.stdout.take().ok_or("no stdout")?,
        child.stderr.take().ok_or("no stderr")?,
    );
    let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            n = stdout.read(&mut a), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => log.push(&a[..n]),
            },
            n = stderr.read(&mut b), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => log.push(&b[..n]),
            },
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for {name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// A build step's process group, killed when dropped (a finished group is gone already).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0 as i32);
        match nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = self.0, error = %e, "killing a build's processes"),
        }
    }
}

/// Stores the artifact at `out` as `{dir}/images/{builder}-{digest}` (0755) and returns its
/// path and digest.
fn store(
    cfg: &LocalBuildConfig,
    builder: &Builder,
    out: &Path,
) -> Result<(String, String), String> {
    let meta = std::fs::metadata(out)
        .map_err(|e| format!("the build left no artifact at $KANMON_BUILD_OUTPUT: {e}"))?;
    if !meta.is_file() {
        return Err("$KANMON_BUILD_OUTPUT is not a file".into());
    }
    let mut f = std::fs::File::open(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut hash = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let images = cfg.dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| format!("{}: {e}", images.display()))?;
    let image = images.join(format!("{}-{}", builder.name, &digest[..16]));
    std::fs::copy(out, &image).map_err(|e| format!("{}: {e}", image.display()))?;
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", image.display()))?;
    Ok((image.display().to_string(), digest))
}
