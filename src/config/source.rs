//! Where a config comes from: one file, or a directory whose `*.yaml` files (sorted by
//! name) form one config, so that teams can each own a file. Rule tests
//! (`*.test.yaml`) beside them are not config.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::ConfigErrors;

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

/// True for the files of a directory that are config: `*.yaml`, not `*.test.yaml`, not
/// hidden (editors' swap files, Kubernetes' `..data`).
pub fn is_config_file(name: &str) -> bool {
    name.ends_with(".yaml") && !name.ends_with(".test.yaml") && !name.starts_with('.')
}

impl Sources {
    /// Reads a config file, or every config file of a directory.
    pub fn read(path: &Path) -> Result<Sources, ConfigErrors> {
        let shown = path.display().to_string();
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors::one(
                    p.display().to_string(),
                    format!("cannot read the file: {e}"),
                )
            })
        };
        if !path.is_dir() {
            let text = read(path)?;
            return Ok(Sources::single(&shown, text, path));
        }
        let entries = std::fs::read_dir(path)
            .map_err(|e| ConfigErrors::one(&shown, format!("cannot read the directory: {e}")))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_config_file(n))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(ConfigErrors::one(
                &shown,
                "the directory holds no config (*.yaml) file",
            ));
        }
        let files = names
            .iter()
            .map(|n| {
                let p = path.join(n);
                Ok(SourceFile {
                    name: p.display().to_string(),
                    text: read(&p)?,
                })
            })
            .collect::<Result<_, ConfigErrors>>()?;
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
