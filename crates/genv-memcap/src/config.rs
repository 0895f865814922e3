//! What the environment asks for, read once from the process's variables:
//! the capacity (`GENV_GPU_MEMORY`), the environment (`GENV_ENVIRONMENT_ID`),
//! the state folder (`GENV_TMPDIR`) and how CUDA ordinals map to GPU indices
//! (`CUDA_VISIBLE_DEVICES`). Read with `getenv`, which neither allocates nor
//! locks.

use std::ffi::CStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use crate::layout::MAX_DEVICES;
use crate::ledger::Ledger;

pub(crate) struct State {
    /// Bytes per GPU.
    pub cap: u64,
    /// The capacity as the user wrote it, for the message.
    cap_text: Text<32>,
    eid: Text<64>,
    /// CUDA ordinal → GPU index, from `CUDA_VISIBLE_DEVICES`.
    indices: [u16; MAX_DEVICES],
    visible: usize,
    pub ledger: Ledger,
}

static STATE: OnceLock<Option<State>> = OnceLock::new();

/// The environment's cap, when there is one to enforce.
pub(crate) fn state() -> Option<&'static State> {
    STATE.get_or_init(load).as_ref()
}

fn load() -> Option<State> {
    if exempt() {
        return None;
    }
    let cap_text = var(c"GENV_GPU_MEMORY")?;
    let cap = parse_memory(cap_text.to_bytes())?;
    let eid = var(c"GENV_ENVIRONMENT_ID")
        .map(CStr::to_bytes)
        .unwrap_or(b"");
    let tmpdir = var(c"GENV_TMPDIR").unwrap_or(c"/var/tmp/genv");
    let (indices, visible) = visible_devices(var(c"CUDA_VISIBLE_DEVICES").map(CStr::to_bytes));
    Some(State {
        cap,
        cap_text: Text::new(cap_text.to_bytes()),
        eid: Text::new(eid),
        indices,
        visible,
        ledger: Ledger::open(tmpdir, eid),
    })
}

impl State {
    /// The GPU index (as nvidia-smi and genv number them) of a CUDA ordinal.
    pub(crate) fn index_of(&self, ordinal: i32) -> usize {
        let ordinal = usize::try_from(ordinal).unwrap_or(0);
        let index = if ordinal < self.visible {
            usize::from(self.indices[ordinal])
        } else {
            ordinal
        };
        index.min(MAX_DEVICES - 1)
    }

    /// Takes `size` bytes on a GPU unless that would pass the cap; says
    /// once, the first time, when the process counts alone.
    pub(crate) fn reserve(&self, index: usize, size: u64) -> bool {
        let granted = self.ledger.reserve(index, size, self.cap);
        if self.ledger.alone() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                let mut line = Text::<512>::default();
                line.push(b"genv: warning: every slot of environment ");
                line.push(self.eid.bytes());
                line.push(
                    b"'s GPU memory ledger is held by a live process; this process is capped at ",
                );
                line.push(self.cap_text.bytes());
                line.push(b" per GPU on its own, and the environment's other processes do not count what it holds");
                say(line);
            }
        }
        granted
    }

    /// Says once per process, on stderr, that the cap refused an allocation.
    pub(crate) fn refused(&self, index: usize, size: u64) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if SAID.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut line = Text::<512>::default();
        line.push(b"genv: error: out of GPU memory: environment ");
        line.push(self.eid.bytes());
        line.push(b" is capped at ");
        line.push(self.cap_text.bytes());
        line.push(b" per GPU (GPU ");
        line.number(index as u64);
        line.push(b": ");
        line.number(self.ledger.used(index));
        line.push(b" bytes in use, ");
        line.number(size);
        line.push(b" more refused)");
        if !self.ledger.is_shared() {
            line.push(
                b"; counted for this process alone (the state folder's ledger could not be used)",
            );
        } else if self.ledger.alone() {
            line.push(b"; counted for this process alone (every slot of the ledger is taken)");
        }
        say(line);
    }
}

/// Writes a line to stderr.
fn say(mut line: Text<512>) {
    line.raw(b'\n');
    // SAFETY: writes our own buffer to stderr.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
}

/// The programs that read the hardware for genv itself, which must see the
/// GPUs' real memory: `genv` (its shims included) and `nvidia-smi`.
fn exempt() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: reads the link into our buffer.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Some(path) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else {
        return false;
    };
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    name == b"genv" || name == b"nvidia-smi"
}

fn var(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: getenv returns null or a string that lives as long as the
    // environment entry, which genv's variables do in practice.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from the environment.
    let value = unsafe { CStr::from_ptr(value) };
    (!value.is_empty()).then_some(value)
}

/// genv's memory strings: digits and an optional unit, `b k m g` (powers
/// of 1000) or `ki mi gi` (powers of 1024).
pub(crate) fn parse_memory(text: &[u8]) -> Option<u64> {
    const UNITS: [(&[u8], u64); 7] = [
        (b"ki", 1 << 10),
        (b"mi", 1 << 20),
        (b"gi", 1 << 30),
        (b"b", 1),
        (b"k", 1_000),
        (b"m", 1_000_000),
        (b"g", 1_000_000_000),
    ];
    let (digits, unit) = UNITS
        .iter()
        .find_map(|(unit, m)| text.strip_suffix(*unit).map(|d| (d, *m)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    n.checked_mul(unit)
}

/// `CUDA_VISIBLE_DEVICES` as a list of GPU indices; identity when unset or
/// when it names devices otherwise (UUIDs, MIG instances).
fn visible_devices(value: Option<&[u8]>) -> ([u16; MAX_DEVICES], usize) {
    let mut indices = [0u16; MAX_DEVICES];
    let Some(value) = value else {
        return (indices, 0);
    };
    let mut count = 0;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        let Some(index) = parse_memory(item).filter(|_| item.iter().all(u8::is_ascii_digit)) else {
            // CUDA stops at the first entry it cannot read.
            break;
        };
        if count == MAX_DEVICES {
            break;
        }
        indices[count] = u16::try_from(index).unwrap_or(u16::MAX);
        count += 1;
    }
    (indices, count)
}

/// A fixed buffer of text, for messages and names without the heap.
pub(crate) struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Text<N> {
    /// Text for a terminal: control characters become `?`, and what does
    /// not fit is cut.
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut text = Text::default();
        text.push(bytes);
        text
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len == N {
                return;
            }
            self.buf[self.len] = if b < 0x20 || b == 0x7f { b'?' } else { b };
            self.len += 1;
        }
    }

    /// Ends the text with a NUL, for the system calls.
    pub(crate) fn nul(&mut self) {
        self.raw(0);
    }

    /// Adds a byte as it is (the last one, even when the text is full).
    pub(crate) fn raw(&mut self, byte: u8) {
        self.len = self.len.min(N - 1);
        self.buf[self.len] = byte;
        self.len += 1;
    }

    pub(crate) fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_strings() {
        assert_eq!(parse_memory(b"4g"), Some(4_000_000_000));
        assert_eq!(parse_memory(b"3gi"), Some(3 << 30));
        assert_eq!(parse_memory(b"512mi"), Some(512 << 20));
        assert_eq!(parse_memory(b"42"), Some(42));
        assert_eq!(parse_memory(b"7b"), Some(7));
        assert_eq!(parse_memory(b"g"), None);
        assert_eq!(parse_memory(b"1.5g"), None);
        assert_eq!(parse_memory(b"99999999999999999999g"), None);
    }

    #[test]
    fn visible_devices_map_ordinals() {
        let (indices, n) = visible_devices(Some(b"3, 1"));
        assert_eq!((n, indices[0], indices[1]), (2, 3, 1));
        assert_eq!(visible_devices(Some(b"GPU-1234")).1, 0);
        assert_eq!(visible_devices(None).1, 0);
    }

    #[test]
    fn text_is_cut_and_cleaned() {
        let mut t = Text::<8>::new(b"a\nb");
        t.number(12345678);
        assert_eq!(t.bytes(), b"a?b12345");
        t.raw(b'\n');
        assert_eq!(t.bytes(), b"a?b1234\n");
    }
}
