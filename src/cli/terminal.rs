//! The local terminal for `rafter exec -t`: raw mode while the remote
//! command owns the terminal, and the terminal's size.
//!
//! Raw mode (no echo, no line editing, no signals from ^C or ^Z) hands
//! every keystroke to the remote terminal, which does all of that itself.
//! [`RawMode`] restores the saved settings when dropped, so every way out of
//! `exec` — the command's exit, an error, a panic (unwinding), a signal
//! handled by `exec` — gives the user their terminal back.
//!
//! Through rustix's safe termios calls rather than libc's: the workspace
//! forbids unsafe code.

use std::io;
use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

/// Stdin in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin (a terminal) in raw mode.
    pub fn enable() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Now, not after draining (TCSAFLUSH): what was typed ahead is
        // kept and goes to the remote command.
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Whether stdin is a terminal (`-t` needs one).
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// The terminal's size as (rows, columns): stdin's, else stdout's; `None`
/// when neither is a terminal or it reports no size.
pub fn size() -> Option<(u16, u16)> {
    let of = |w: termios::Winsize| (w.ws_row > 0 && w.ws_col > 0).then_some((w.ws_row, w.ws_col));
    termios::tcgetwinsize(io::stdin())
        .ok()
        .and_then(of)
        .or_else(|| termios::tcgetwinsize(io::stdout()).ok().and_then(of))
}
