//! Checks every subcommand makes before it loads a model or writes a file: inputs exist, outputs can be written.
//!
//! Output paths: a missing parent folder is created (and said on stderr); an existing file is replaced; a path
//! that is an existing folder is an error. `collect --out` names a folder, which is created when missing.

use sdscope::{Error, Result};
use std::path::Path;

/// Every input file exists (a typed "file not found" otherwise, before any work).
pub fn inputs_exist<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    for path in paths {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::MissingFile { path: path.to_path_buf(), hint: None });
        }
    }
    Ok(())
}

/// Every output path can name a file: not an existing folder, and not empty.
pub fn outputs_valid(paths: &[(&str, Option<&Path>)]) -> Result<()> {
    for (flag, path) in paths {
        let Some(path) = path else { continue };
        if path.as_os_str().is_empty() || path.is_dir() {
            return Err(Error::invalid(
                format!("{flag} {}", path.display()),
                "is a folder (or empty): give a file name, e.g. out/result.safetensors",
            ));
        }
    }
    Ok(())
}

/// Create the missing parent folders of the outputs, saying so; call right before the work starts.
pub fn create_parents(paths: &[Option<&Path>]) -> Result<()> {
    for path in paths.iter().flatten() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::invalid(format!("creating {}", parent.display()), e.to_string()))?;
            eprintln!("[sdscope] created folder {}", parent.display());
        }
    }
    Ok(())
}
