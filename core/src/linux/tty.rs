//! The user's terminal: raw mode for `-it`, restored however the relay ends.

/// Puts stdin in raw mode while alive, if stdin is a terminal.
pub struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Spots the detach keys (`--detach-keys`, ctrl-p ctrl-q by default) in what the user types.
/// A partial match is held back until the next byte shows it is not a detach.
pub struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    pub fn new(keys: &[u8]) -> DetachKeys {
        DetachKeys {
            keys: keys.to_vec(),
            matched: 0,
        }
    }

    /// The bytes of `input` to pass on, or None once the whole sequence has been typed.
    pub fn filter(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut pass = Vec::with_capacity(input.len());
        for &b in input {
            if !self.keys.is_empty() && b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return None;
                }
                continue;
            }
            pass.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            pass.push(b);
        }
        Some(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::DetachKeys;

    #[test]
    fn detach_keys_are_held_back_until_they_complete_or_break() {
        let mut keys = DetachKeys::new(&[0x10, 0x11]);
        assert_eq!(keys.filter(b"ab"), Some(b"ab".to_vec()));
        assert_eq!(keys.filter(&[0x10]), Some(vec![]), "held back");
        assert_eq!(keys.filter(b"x"), Some(vec![0x10, b'x']), "not a detach");
        assert_eq!(keys.filter(&[b'y', 0x10]), Some(vec![b'y']));
        assert_eq!(keys.filter(&[0x11]), None);
        let mut none = DetachKeys::new(&[]);
        assert_eq!(none.filter(&[0x10, 0x11]), Some(vec![0x10, 0x11]));
    }
}
