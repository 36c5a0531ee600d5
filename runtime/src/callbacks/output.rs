//! Where the progress bar and the model summary write: standard output, or a writer given for tests and
//! log files. Write errors are dropped: showing progress must never fail or abort training.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::TermLike;

/// A destination for terminal text.
#[derive(Clone, Default)]
pub(crate) enum Output {
    /// Standard output, through `print!`.
    #[default]
    Stdout,
    /// A writer shared by the clones of this output.
    Writer(Arc<Mutex<Box<dyn Write + Send>>>),
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Stdout => f.write_str("Stdout"),
            Output::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

impl Output {
    pub(crate) fn writer(w: impl Write + Send + 'static) -> Self {
        Output::Writer(Arc::new(Mutex::new(Box::new(w))))
    }

    /// `true` for standard output when it is a terminal that understands cursor movements (not
    /// `TERM=dumb`).
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self, Output::Stdout)
            && io::stdout().is_terminal()
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
    }

    pub(crate) fn write(&self, text: &str) {
        match self {
            Output::Stdout => print_quietly(text),
            Output::Writer(w) => {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                let _ = w.write_all(text.as_bytes());
            }
        }
    }

    pub(crate) fn flush(&self) {
        match self {
            Output::Stdout => {
                let _ = io::stdout().flush();
            }
            Output::Writer(w) => {
                let _ = w.lock().unwrap_or_else(|e| e.into_inner()).flush();
            }
        }
    }

    /// The terminal's width in columns (80 for a writer or when it cannot be told).
    fn width(&self) -> u16 {
        match self {
            Output::Stdout => console::Term::stdout()
                .size_checked()
                .map_or(80, |(_, cols)| cols),
            Output::Writer(_) => 80,
        }
    }
}

/// `print!` rather than a write to `io::stdout()`, so that the test harness captures the text like
/// any `println!` of the test. `print!` panics when the write fails (a closed pipe, a full disk): the
/// text goes through a `Display` that drops that error, which leaves `print!` nothing to panic about.
fn print_quietly(text: &str) {
    struct Quiet<'a>(&'a str);
    impl fmt::Display for Quiet<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let _ = f.write_str(self.0);
            Ok(())
        }
    }
    print!("{}", Quiet(text));
}

/// indicatif's view of an [`Output`]: ANSI cursor movements written as text.
#[derive(Debug)]
pub(crate) struct Term(pub(crate) Output);

impl TermLike for Term {
    fn width(&self) -> u16 {
        self.0.width()
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write(s);
        self.0.write("\n");
        Ok(())
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write(s);
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.0.write("\r\x1b[2K");
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush();
        Ok(())
    }
}

impl Term {
    fn escape(&self, n: usize, code: char) -> io::Result<()> {
        if n > 0 {
            self.0.write(&format!("\x1b[{n}{code}"));
        }
        Ok(())
    }
}
