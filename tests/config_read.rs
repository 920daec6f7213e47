//! Reading a config directory safely, through the binary and through a running
//! service's reload: a `*.yaml` that is not a regular file, a symlink out of the
//! directory and a file over the size limit are refused unread, in bounded memory; a
//! running service keeps serving its config and still stops on SIGTERM.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use common::process::{connres, Proc};
use common::*;
use connres::config::MAX_FILE_BYTES;
use connres::reload::ReloadReport;
use serde_json::json;

const BASE: &str =
    "version: 1\nresources:\n  a.{cid}:\n    fields:\n      x: { type: integer, default: 1 }\n    access:\n      get: 'true'\n";

const ROOM: &str =
    "  chat.room.{room}:\n    fields:\n      topic: { type: string, default: general }\n    access:\n      get: 'true'\n";

/// The most heap a child process may take (`RLIMIT_DATA`): a read of `/dev/zero`
/// without a limit passes it within seconds, and then the child dies, not the machine.
const CHILD_MEMORY: u64 = 1 << 30;

/// The command, its heap bounded by [`CHILD_MEMORY`].
fn bounded(cmd: &mut Command) -> &mut Command {
    // SAFETY: only setrlimit runs between fork and exec, and it does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CHILD_MEMORY as libc::rlim_t,
                rlim_max: CHILD_MEMORY as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Puts `make`'s file into `dir` as `name` in one step (made as `name.tmp`, which is
/// no config file, then renamed), so that the watcher sees it once, whole.
fn place(dir: &Path, name: &str, make: impl FnOnce(&Path)) {
    let staged = dir.join(format!("{name}.tmp"));
    make(&staged);
    std::fs::rename(&staged, dir.join(name)).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[tokio::test]
async fn check_refuses_a_dev_zero_symlink_and_a_symlink_out_in_bounded_memory() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, "postgres:TOPSECRET:20593:::::\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.yaml"), BASE).unwrap();
    symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    symlink(&secret, dir.path().join("shadow.yaml")).unwrap();

    let out = Proc::spawn(bounded(
        connres().arg("check").arg("--config").arg(dir.path()),
    ))
    .output()
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?}: {}",
        out.status,
        out.stderr
    );
    let shadow = dir.path().join("shadow.yaml").display().to_string();
    let zero = dir.path().join("zero.yaml").display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "{shadow}:1:1: not read: a symlink to a file outside the config directory"
        )) && out.stderr.contains(&format!(
            "{zero}:1:1: not read: a symlink to a file outside the config directory"
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("TOPSECRET"), "{}", out.stderr);
}

/// The next reload outcome (`Compiling` skipped).
async fn next_outcome(
    reports: &mut tokio::sync::broadcast::Receiver<ReloadReport>,
) -> ReloadReport {
    loop {
        let report = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a reload report")
            .expect("reports open");
        if report != ReloadReport::Compiling {
            return report;
        }
    }
}

#[tokio::test]
async fn a_reload_refuses_unsafe_files_and_the_old_config_keeps_serving() {
    // A directory laid out as Kubernetes mounts a ConfigMap: `resources.yaml ->
    // ..data/resources.yaml`, `..data -> ..<time>/`, all inside the directory.
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("..2026_01_01_00_00_00.123");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("resources.yaml"), BASE).unwrap();
    symlink("..2026_01_01_00_00_00.123", dir.path().join("..data")).unwrap();
    symlink("..data/resources.yaml", dir.path().join("resources.yaml")).unwrap();
    let (connres, gw, mut reports) = start_watched(&server, dir.path()).await;
    assert_eq!(gw.get("a.c1").await, json!({"x": 1}));

    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, "postgres:TOPSECRET:20593:::::\n").unwrap();
    type Make = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "shadow.yaml",
            Box::new(move |p| symlink(&secret, p).unwrap()),
            "not read: a symlink to a file outside the config directory",
        ),
        (
            "big.yaml",
            Box::new(|p| {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(MAX_FILE_BYTES + 1).unwrap();
            }),
            "not read: larger than 16 MiB",
        ),
        ("pipe.yaml", Box::new(mkfifo), "not read: it is a FIFO"),
        (
            "zero.yaml",
            Box::new(|p| symlink("/dev/zero", p).unwrap()),
            "not read: a symlink to a file outside the config directory",
        ),
    ];
    for (name, make, says) in cases {
        place(dir.path(), name, make);
        let ReloadReport::Rejected { errors } = next_outcome(&mut reports).await else {
            panic!("{name} is refused");
        };
        let file = dir.path().join(name).display().to_string();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{file}:1:1: {says}")),
            "{errors:?}"
        );
        assert!(!errors[0].contains("TOPSECRET"), "{errors:?}");
        // The old config keeps serving.
        assert_eq!(gw.get("a.c1").await, json!({"x": 1}));
        std::fs::remove_file(dir.path().join(name)).unwrap();
        assert_eq!(
            next_outcome(&mut reports).await,
            ReloadReport::Unchanged { restored: true },
            "{name} removed"
        );
    }

    // The ConfigMap's update, a swap of `..data`, is applied.
    let v2 = dir.path().join("..2026_01_01_00_01_00.456");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("resources.yaml"), format!("{BASE}{ROOM}")).unwrap();
    symlink("..2026_01_01_00_01_00.456", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    match next_outcome(&mut reports).await {
        ReloadReport::Applied { diff, .. } => assert_eq!(diff.added, ["chat.room.{room}"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.get("chat.room.lobby").await, json!({"topic": "general"}));
    connres.stop().await;
}

#[tokio::test]
async fn sigterm_stops_serve_after_a_dev_zero_symlink_appears_in_its_directory() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.yaml"), BASE).unwrap();
    let mut proc = Proc::spawn(bounded(
        connres()
            .arg("serve")
            .arg("--config")
            .arg(dir.path())
            .arg("--nats")
            .arg(&server.url),
    ));
    proc.wait_for_log("connres is serving");
    place(dir.path(), "zero.yaml", |p| {
        symlink("/dev/zero", p).unwrap()
    });
    let file = dir.path().join("zero.yaml").display().to_string();
    proc.wait_for_log(&format!(
        "{file}:1:1: not read: a symlink to a file outside the config directory"
    ));
    proc.wait_for_log("config reload rejected; the previous config keeps serving");
    proc.terminate();
    let out = proc.output().await;
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(out.stderr.contains("stopped"), "{}", out.stderr);
}
