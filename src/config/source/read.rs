//! Reading one config file safely: only a regular file is opened (a FIFO would block,
//! a device never ends), a symlink of a config directory only when it leads to a file
//! inside that directory, and never more than a size limit, read through `take` so that
//! a file growing under the reader cannot make it allocate past the limit. What is
//! refused is said without quoting anything of the file.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Pos};

/// Why a file was not read, with the place in it when there is one (the first byte
/// that is not UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    pub pos: Pos,
    pub message: String,
}

impl Refused {
    fn new(message: impl Into<String>) -> Refused {
        Refused {
            pos: Pos { line: 1, col: 1 },
            message: message.into(),
        }
    }

    /// As a config error; `file` names it when the config is a directory.
    pub fn error(self, file: Option<String>) -> ConfigError {
        ConfigError {
            file,
            pos: self.pos,
            message: self.message,
        }
    }

    /// A file larger than the most `what` (`a config file`) may hold.
    pub fn too_big(limit: u64, what: &str) -> Refused {
        Refused::new(format!(
            "not read: larger than {}, the most {what} may hold",
            size(limit)
        ))
    }

    /// A directory whose config files together hold more than the most it may.
    pub fn dir_too_big(limit: u64) -> Refused {
        Refused::new(format!(
            "not read: its config files hold more than {} together, the most a config directory may hold",
            size(limit)
        ))
    }

    fn cannot_read(e: std::io::Error) -> Refused {
        Refused::new(format!("cannot read the file: {e}"))
    }

    fn not_regular(t: FileType, what: &str) -> Refused {
        Refused::new(format!(
            "not read: it is {}, and {what} must be a regular file",
            kind(t)
        ))
    }

    fn outside() -> Refused {
        Refused::new(
            "not read: a symlink to a file outside the config directory; only symlinks that stay inside it are followed",
        )
    }

    /// Text that is not UTF-8: the place of the first byte that is not, quoting nothing.
    fn not_utf8(bytes: &[u8], valid_up_to: usize, what: &str) -> Refused {
        let valid = &bytes[..valid_up_to];
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let col = std::str::from_utf8(&valid[line_start..]).map_or(1, |s| s.chars().count() + 1);
        Refused {
            pos: Pos {
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                col,
            },
            message: format!("not UTF-8 text; {what} must be UTF-8"),
        }
    }
}

/// What a file that is not a regular file is, for messages.
fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// A size as people say it (the limits are whole MiB).
fn size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Why a read did not give the file's text.
#[derive(Debug)]
pub(super) enum NotRead {
    Refused(Refused),
    /// The file holds more than the limit it was read with (it grew since it was
    /// checked, or the directory's limit is nearly used up): the caller says which.
    PastLimit,
}

/// A file that may be read: checked, not opened yet.
#[derive(Debug)]
pub(super) struct Checked {
    path: PathBuf,
    /// Its size when checked (it may change before it is read).
    pub len: u64,
    /// What it is, for messages (`a config file`).
    what: String,
}

/// Checks a file before it is opened: a regular file of at most `limit` bytes. `inside`:
/// the config directory (canonical) that a symlink must lead into; `None` for a file the
/// operator named, which may be a symlink to anywhere.
pub(super) fn check(
    path: &Path,
    inside: Option<&Path>,
    limit: u64,
    what: &str,
) -> Result<Checked, Refused> {
    let mut meta = std::fs::symlink_metadata(path).map_err(Refused::cannot_read)?;
    if meta.file_type().is_symlink() {
        if let Some(dir) = inside {
            let target = std::fs::canonicalize(path).map_err(Refused::cannot_read)?;
            if !target.starts_with(dir) {
                return Err(Refused::outside());
            }
        }
        meta = std::fs::metadata(path).map_err(Refused::cannot_read)?;
    }
    if !meta.file_type().is_file() {
        return Err(Refused::not_regular(meta.file_type(), what));
    }
    if meta.len() > limit {
        return Err(Refused::too_big(limit, what));
    }
    Ok(Checked {
        path: path.to_path_buf(),
        len: meta.len(),
        what: what.to_string(),
    })
}

impl Checked {
    /// Reads the checked file: at most `limit` bytes, UTF-8. Once open, the file is
    /// checked again, in case it was swapped since: still a regular file (it is opened
    /// without blocking, so a FIFO swapped in is not waited on), and still inside the
    /// config directory (`inside`, as [`check`] took it) where Linux says where an
    /// open file is.
    pub fn read(&self, inside: Option<&Path>, limit: u64) -> Result<String, NotRead> {
        let refused = |e| NotRead::Refused(Refused::cannot_read(e));
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path)
            .map_err(refused)?;
        let meta = file.metadata().map_err(refused)?;
        if !meta.file_type().is_file() {
            return Err(NotRead::Refused(Refused::not_regular(
                meta.file_type(),
                &self.what,
            )));
        }
        if let (Some(dir), Some(opened)) = (inside, opened_path(&file)) {
            if !opened.starts_with(dir) {
                return Err(NotRead::Refused(Refused::outside()));
            }
        }
        let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(refused)?;
        if bytes.len() as u64 > limit {
            return Err(NotRead::PastLimit);
        }
        String::from_utf8(bytes).map_err(|e| {
            let valid_up_to = e.utf8_error().valid_up_to();
            NotRead::Refused(Refused::not_utf8(e.as_bytes(), valid_up_to, &self.what))
        })
    }
}

/// Where an open file is, as the kernel resolved it (`/proc/self/fd`); `None` where
/// that is not available.
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd as _;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}
