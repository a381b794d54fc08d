//! One error type for the whole library: every failure a user can cause is a value that says
//! where it happened (file, key path or layer name) and what was expected versus found.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, with enough context to fix it without reading a backtrace.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The file the problem is in or about, when there is one.
    pub file: Option<PathBuf>,
    /// A key path (`model.layers[3].conv2d.kernel`) or layer name (`layer 'conv1'`).
    pub location: Option<String>,
    /// The message itself, e.g. "expected 3 dimensions, found 2".
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            file: None,
            location: None,
            message: message.into(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::new(err.to_string()).in_file(path)
    }

    /// Attaches the file, unless a more precise one is already known.
    pub fn in_file(mut self, path: impl AsRef<Path>) -> Self {
        if self.file.is_none() {
            self.file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attaches a location, prefixing the one already known (outer context first).
    pub fn at(mut self, location: impl Into<String>) -> Self {
        let outer = location.into();
        self.location = Some(match self.location.take() {
            Some(inner) if inner.starts_with('[') => format!("{outer}{inner}"),
            Some(inner) => format!("{outer}.{inner}"),
            None => outer,
        });
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand: `bail!("expected {a}, found {b}")` returns an `Error` from the current function.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::new(format!($($arg)*)))
    };
}

/// The error methods [`Error::at`] and [`Error::in_file`] on a `Result`, so that `.map_err(|e| e.at("csv"))` reads
/// `.at("csv")`. Implemented for `Result<T, Error>` and for `Result<T, std::io::Error>`, whose error becomes an
/// [`Error`] with the I/O message first (`fs::read(path).in_file(path)` is `.map_err(|e| Error::io(path, e))`).
pub trait Context<T> {
    /// Attaches a location to the error, prefixing the one already known (see [`Error::at`]).
    fn at(self, location: impl Into<String>) -> Result<T>;
    /// [`Context::at`] with a location computed only when there is an error.
    fn at_with(self, location: impl FnOnce() -> String) -> Result<T>;
    /// Attaches the file to the error, unless a more precise one is already known (see [`Error::in_file`]).
    fn in_file(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn at(self, location: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.at(location))
    }
    fn at_with(self, location: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.at(location()))
    }
    fn in_file(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.in_file(path))
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn at(self, location: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::new(e.to_string()).at(location))
    }
    fn at_with(self, location: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(e.to_string()).at(location()))
    }
    fn in_file(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path.as_ref(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_file_then_location_then_message() {
        let e = Error::new("expected 3, found 2")
            .at("kernel")
            .at("model.layers[3]")
            .in_file("x.toml");
        assert_eq!(e.to_string(), "x.toml: model.layers[3].kernel: expected 3, found 2");
    }

    #[test]
    fn index_locations_join_without_dot() {
        let e = Error::new("bad").at("[2]").at("layers");
        assert_eq!(e.location.as_deref(), Some("layers[2]"));
    }

    #[test]
    fn context_on_results_is_the_error_methods() {
        let r: Result<()> = Err(Error::new("bad").at("kernel"));
        let e = r.at("model").in_file("x.toml").unwrap_err();
        assert_eq!(e, Error::new("bad").at("kernel").at("model").in_file("x.toml"));
        let r: Result<()> = Err(Error::new("bad"));
        assert_eq!(
            r.at_with(|| format!("layer '{}'", 3)).unwrap_err().to_string(),
            "layer '3': bad"
        );
        let io: std::io::Result<()> = Err(std::io::Error::other("no such file"));
        assert_eq!(
            io.in_file("a.csv").unwrap_err(),
            Error::io(Path::new("a.csv"), std::io::Error::other("no such file"))
        );
    }
}
