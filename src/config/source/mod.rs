//! Where a config comes from: one file, or a directory whose `*.yaml` files (sorted by
//! name) form one config, so that teams can each own a file. Rule tests
//! (`*.test.yaml`) beside them are not config. What is read, and what is refused
//! unread, is in `read.rs`.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::{ConfigError, ConfigErrors, Pos};

mod read;

use read::{NotRead, Refused};

/// The most a config file may hold: 16 MiB, a thousand times the shipped
/// `resources.yaml` and room for over 100,000 resources. A bigger file is refused
/// unread (its size is checked before it is read, and the read stops past the limit).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most the config files of a directory may hold together: 64 MiB. Past it the
/// directory is refused, and no file beyond the limit is read.
pub const MAX_DIR_BYTES: u64 = 64 << 20;

/// The text of a config, read at one moment.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The path the config was named by (a file or a directory).
    pub path: PathBuf,
    pub dir: bool,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The file as errors name it.
    pub name: String,
    pub text: String,
}

/// What a config file is called in messages.
const CONFIG_FILE: &str = "a config file";

/// Reads a file the operator named that is not config (`what`: "a test file", "a NATS
/// credentials file"), as config files are read: a regular file (a FIFO or a device is
/// refused, never waited on or read without end) of at most `limit` bytes, UTF-8.
/// The error says why without quoting the file.
pub fn read_named(path: &Path, limit: u64, what: &str) -> Result<String, String> {
    let file = read::check(path, None, limit, what).map_err(|r| r.message)?;
    file.read(None, limit).map_err(|e| match e {
        NotRead::Refused(r) => r.message,
        NotRead::PastLimit => Refused::too_big(limit, what).message,
    })
}

/// True for the files of a directory that are config: `*.yaml`, not `*.test.yaml`, not
/// hidden (editors' swap files, Kubernetes' `..data`).
pub fn is_config_file(name: &str) -> bool {
    name.ends_with(".yaml") && !name.ends_with(".test.yaml") && !name.starts_with('.')
}

impl Sources {
    /// Reads a config file, or every config file of a directory. Only regular files are
    /// read, each of at most [`MAX_FILE_BYTES`], a directory's of at most
    /// [`MAX_DIR_BYTES`] together; in a directory a symlink is followed only to a file
    /// inside it (such as Kubernetes' `..data/resources.yaml`). A file refused is not
    /// read (a FIFO is not even opened), and its error quotes nothing of it.
    pub fn read(path: &Path) -> Result<Sources, ConfigErrors> {
        let shown = path.display().to_string();
        let fail = |errors| ConfigErrors {
            file: shown.clone(),
            errors,
        };
        if !path.is_dir() {
            let text = read::check(path, None, MAX_FILE_BYTES, CONFIG_FILE)
                .and_then(|file| match file.read(None, MAX_FILE_BYTES) {
                    Ok(text) => Ok(text),
                    Err(NotRead::Refused(r)) => Err(r),
                    Err(NotRead::PastLimit) => Err(Refused::too_big(MAX_FILE_BYTES, CONFIG_FILE)),
                })
                .map_err(|r| fail(vec![r.error(None)]))?;
            return Ok(Sources::single(&shown, text, path));
        }
        let files = read_dir(path).map_err(fail)?;
        Ok(Sources {
            path: path.to_path_buf(),
            dir: true,
            files,
        })
    }

    /// A config of one file, from its text.
    pub fn single(name: &str, text: String, path: &Path) -> Sources {
        Sources {
            path: path.to_path_buf(),
            dir: false,
            files: vec![SourceFile {
                name: name.to_string(),
                text,
            }],
        }
    }

    /// A fast hash of the whole text (file names included), to skip unchanged reloads.
    pub fn source_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in &self.files {
            f.name.hash(&mut h);
            f.text.hash(&mut h);
        }
        h.finish()
    }

    /// The SHA-256 in hex: of the file's text (what `sha256sum` prints), or for a
    /// directory of each file's name (without the directory), a NUL, its text and a NUL,
    /// in name order.
    pub fn content_hash(&self) -> String {
        let mut h = sha2::Sha256::new();
        if self.dir {
            for f in &self.files {
                let name = Path::new(&f.name).file_name().unwrap_or_default();
                h.update(name.as_encoded_bytes());
                h.update([0]);
                h.update(f.text.as_bytes());
                h.update([0]);
            }
        } else if let Some(f) = self.files.first() {
            h.update(f.text.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The config files of a directory, or every reason they were not read.
fn read_dir(path: &Path) -> Result<Vec<SourceFile>, Vec<ConfigError>> {
    let whole = |r: Refused| vec![r.error(None)];
    let cannot = |e: std::io::Error| {
        vec![ConfigError {
            file: None,
            pos: Pos { line: 1, col: 1 },
            message: format!("cannot read the directory: {e}"),
        }]
    };
    let inside = std::fs::canonicalize(path).map_err(cannot)?;
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(cannot)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_config_file(n))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(vec![ConfigError {
            file: None,
            pos: Pos { line: 1, col: 1 },
            message: "the directory holds no config (*.yaml) file".into(),
        }]);
    }
    // Every file is checked before any is read: each one refused is named, and the
    // sizes add up.
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    let mut total = 0u64;
    for n in &names {
        let file = path.join(n);
        let name = file.display().to_string();
        match read::check(&file, Some(&inside), MAX_FILE_BYTES, CONFIG_FILE) {
            Ok(file) => {
                total = total.saturating_add(file.len);
                checked.push((name, file));
            }
            Err(r) => errors.push(r.error(Some(name))),
        }
    }
    if total > MAX_DIR_BYTES {
        errors.extend(whole(Refused::dir_too_big(MAX_DIR_BYTES)));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Files may change between the check and the read: the limits hold all the same.
    let mut files = Vec::with_capacity(checked.len());
    let mut left = MAX_DIR_BYTES;
    for (name, file) in checked {
        let limit = MAX_FILE_BYTES.min(left);
        match file.read(Some(&inside), limit) {
            Ok(text) => {
                left -= text.len() as u64;
                files.push(SourceFile { name, text });
            }
            Err(NotRead::Refused(r)) => errors.push(r.error(Some(name))),
            Err(NotRead::PastLimit) if limit == MAX_FILE_BYTES => {
                errors.push(Refused::too_big(MAX_FILE_BYTES, CONFIG_FILE).error(Some(name)))
            }
            Err(NotRead::PastLimit) => {
                errors.extend(whole(Refused::dir_too_big(MAX_DIR_BYTES)));
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
