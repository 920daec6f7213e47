//! Reading a config safely: only regular files, symlinks only inside the config
//! directory, bounded sizes, UTF-8; what is refused is never read (a FIFO never opened).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::config::Config;

const BASE: &str =
    "version: 1\nresources:\n  a.{cid}:\n    fields:\n      x: { type: integer, default: 1 }\n    access:\n      get: 'true'\n";

/// A config directory holding `00-base.yaml`, a valid config on its own.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.yaml"), BASE).unwrap();
    dir
}

/// The read's error lines; a read that does not end within 10 s fails the test (a
/// FIFO opened for reading blocks until a writer comes).
fn refused(path: &Path) -> Vec<String> {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Sources::read(&path).map(|s| s.files.len()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(files)) => panic!("read {files} file(s)"),
        Ok(Err(errors)) => errors.lines(),
        Err(_) => panic!("the read did not end"),
    }
}

/// One error line, naming `name` in the directory, that contains every part.
fn assert_refused(dir: &Path, name: &str, parts: &[&str]) -> String {
    let lines = refused(dir);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let file = dir.join(name).display().to_string();
    assert!(line.starts_with(&format!("{file}:1:1: ")), "{line}");
    for part in parts {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    line.clone()
}

#[test]
fn a_symlink_to_dev_zero_is_refused_unread() {
    let dir = config_dir();
    symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    assert_refused(
        dir.path(),
        "zero.yaml",
        &["not read", "outside the config directory"],
    );
    // Named as a single-file config, it is followed, and refused as what it is.
    let lines = refused(&dir.path().join("zero.yaml"));
    assert!(
        lines[0].contains("not read: it is a character device"),
        "{lines:?}"
    );
}

#[test]
fn a_fifo_is_refused_unopened() {
    let dir = config_dir();
    let fifo = dir.path().join("pipe.yaml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(dir.path(), "pipe.yaml", &["not read", "a FIFO"]);
    // A symlink to it is the same.
    std::fs::remove_file(&fifo).unwrap();
    let inner = dir.path().join("..inner");
    std::fs::create_dir(&inner).unwrap();
    let c = std::ffi::CString::new(inner.join("p").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    symlink("..inner/p", dir.path().join("pipe.yaml")).unwrap();
    assert_refused(dir.path(), "pipe.yaml", &["not read", "a FIFO"]);
}

#[test]
fn a_socket_and_a_directory_are_refused() {
    let dir = config_dir();
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("s.yaml")).unwrap();
    assert_refused(dir.path(), "s.yaml", &["not read", "a socket"]);
    std::fs::remove_file(dir.path().join("s.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("d.yaml")).unwrap();
    assert_refused(dir.path(), "d.yaml", &["not read", "a directory"]);
}

#[test]
fn every_refused_file_is_named() {
    let dir = config_dir();
    symlink("/dev/zero", dir.path().join("a.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("b.yaml")).unwrap();
    let lines = refused(dir.path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("a.yaml:1:1: not read: a symlink"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("b.yaml:1:1: not read: it is a directory"),
        "{lines:?}"
    );
}

/// A sparse file of `len` bytes (zeros), which costs no disk.
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn an_oversized_file_is_refused_with_the_limit() {
    let dir = config_dir();
    sparse(&dir.path().join("big.yaml"), MAX_FILE_BYTES + 1);
    assert_refused(dir.path(), "big.yaml", &["not read", "16 MiB"]);
    // A single-file config too.
    let file = dir.path().join("big.yaml");
    let lines = refused(&file);
    assert!(
        lines[0].starts_with(&format!("{}:1:1: ", file.display())) && lines[0].contains("16 MiB"),
        "{lines:?}"
    );
}

#[test]
fn a_file_at_the_limit_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("full.yaml");
    sparse(&file, MAX_FILE_BYTES);
    let sources = Sources::read(&file).unwrap();
    assert_eq!(sources.files[0].text.len() as u64, MAX_FILE_BYTES);
}

#[test]
fn a_file_that_grew_since_its_check_is_read_no_further_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("growing.yaml");
    std::fs::write(&file, "a: 1\n").unwrap();
    let checked = read::check(&file, None, 100, "a config file").unwrap();
    std::fs::write(&file, "a: 1\n".repeat(1000)).unwrap();
    assert!(matches!(
        checked.read(None, 100),
        Err(read::NotRead::PastLimit)
    ));
    assert_eq!(checked.read(None, 5000).unwrap().len(), 5000);
}

#[test]
fn the_files_of_a_directory_are_limited_together() {
    let dir = config_dir();
    let each = MAX_FILE_BYTES - 1;
    let n = MAX_DIR_BYTES / each + 1;
    for i in 0..n {
        sparse(&dir.path().join(format!("part{i}.yaml")), each);
    }
    let lines = refused(dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{}:1:1: ", dir.path().display()))
            && lines[0].contains("64 MiB"),
        "{lines:?}"
    );
}

#[test]
fn a_symlink_out_of_the_directory_is_refused_and_nothing_of_its_target_quoted() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.yaml");
    std::fs::write(&secret, "postgres:TOPSECRET:20593:::::\n").unwrap();
    let dir = config_dir();
    symlink(&secret, dir.path().join("shadow.yaml")).unwrap();
    let line = assert_refused(
        dir.path(),
        "shadow.yaml",
        &["not read", "outside the config directory"],
    );
    assert!(!line.contains("TOPSECRET"), "{line}");
    // Out and back in again through `..` stays outside too.
    std::fs::remove_file(dir.path().join("shadow.yaml")).unwrap();
    symlink("../../etc/passwd", dir.path().join("up.yaml")).unwrap();
    assert_refused(dir.path(), "up.yaml", &["outside the config directory"]);
    // The same file named as a single-file config is read: the operator named it.
    assert!(Sources::read(&secret).is_ok());
}

#[test]
fn a_symlink_into_a_hidden_subdirectory_is_followed() {
    // Kubernetes: `resources.yaml -> ..data/resources.yaml`, `..data -> ..<time>/`.
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("..2026_01_01_00_00_00.123");
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("resources.yaml"), BASE).unwrap();
    symlink("..2026_01_01_00_00_00.123", dir.path().join("..data")).unwrap();
    symlink("..data/resources.yaml", dir.path().join("resources.yaml")).unwrap();
    let sources = Sources::read(dir.path()).unwrap();
    assert_eq!(sources.files.len(), 1);
    assert_eq!(
        sources.files[0].name,
        dir.path().join("resources.yaml").display().to_string()
    );
    assert_eq!(sources.files[0].text, BASE);
    assert!(Config::load(dir.path()).is_ok());
    // The directory itself may be reached through a symlink.
    let parent = tempfile::tempdir().unwrap();
    symlink(dir.path(), parent.path().join("config")).unwrap();
    assert!(Config::load(&parent.path().join("config")).is_ok());
}

#[test]
fn a_single_file_may_be_a_symlink_anywhere_but_must_be_a_regular_file() {
    let elsewhere = config_dir();
    let here = tempfile::tempdir().unwrap();
    let link = here.path().join("resources.yaml");
    symlink(elsewhere.path().join("00-base.yaml"), &link).unwrap();
    assert_eq!(Sources::read(&link).unwrap().files[0].text, BASE);
    std::fs::remove_file(&link).unwrap();
    symlink("/dev/zero", &link).unwrap();
    let lines = refused(&link);
    assert!(
        lines[0].starts_with(&format!("{}:1:1: ", link.display()))
            && lines[0].contains("a character device"),
        "{lines:?}"
    );
}

#[test]
fn a_symlink_to_nothing_is_an_error() {
    let dir = config_dir();
    symlink("..nowhere/resources.yaml", dir.path().join("gone.yaml")).unwrap();
    assert_refused(dir.path(), "gone.yaml", &["cannot read the file"]);
}

#[test]
fn text_that_is_not_utf8_is_an_error_at_its_place_quoting_nothing() {
    let dir = config_dir();
    std::fs::write(
        dir.path().join("bin.yaml"),
        b"version: 1\nkey: SECRET\xff\xfe\n".as_slice(),
    )
    .unwrap();
    let lines = refused(dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let file = dir.path().join("bin.yaml").display().to_string();
    assert!(
        lines[0].starts_with(&format!("{file}:2:12: ")) && lines[0].contains("UTF-8"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("SECRET"), "{lines:?}");
}
