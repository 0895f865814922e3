//! The environment's GPU memory use, shared by all its processes: a file
//! in the state folder, `memcap-<uid>-<environment>`, mapped into every
//! process. It holds one slot per process (its pid, its start time and
//! what it holds on each GPU); only the owner changes its own amounts, so
//! there are no locks. A slot whose process is gone (even by `kill -9`)
//! is taken back by whoever next needs the room: the share comes back
//! without any daemon.
//!
//! Reserving adds to the own slot first and sums all slots after
//! (sequentially consistent), so two processes racing for the last bytes
//! may both be refused but can never both pass.
//!
//! The state folder is writable by every local user: the file is opened
//! relative to the folder, never through a link, created 0600, and used
//! only when it is a regular file of ours, with no other name (a second
//! link could be any file of the user's), of the expected size. Otherwise
//! the process keeps a private ledger and still caps itself.
//!
//! When every slot is held by a live process, one more process counts its
//! own allocations in memory of its own ([`ALONE`]): the environment's use
//! as the ledger says plus its own stays within the cap, though the others
//! do not see what it holds.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

use crate::config::Text;
use crate::layout::{self, MAGIC, MAX_DEVICES, RECLAIMING, SIZE, SLOTS};

/// The header as [`layout`] places it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Slots at or above this index have never been used.
    high: AtomicU64,
    _reserved: [u64; layout::HEADER_WORDS - 2],
}

/// A slot as [`layout`] places it.
#[repr(C)]
struct Slot {
    /// 0 when free, else the pid (or [`RECLAIMING`] | pid).
    owner: AtomicU64,
    /// The owner's start time, 0 while being claimed.
    start: AtomicU64,
    used: [AtomicU64; MAX_DEVICES],
}

// The structs are the layout, word for word.
const _: () = {
    assert!(size_of::<Header>() == 8 * layout::HEADER_WORDS);
    assert!(std::mem::offset_of!(Header, high) == 8 * layout::HIGH_WORD);
    assert!(size_of::<Slot>() == 8 * layout::SLOT_WORDS);
    assert!(std::mem::offset_of!(Slot, owner) == 8 * layout::OWNER_WORD);
    assert!(std::mem::offset_of!(Slot, start) == 8 * layout::START_WORD);
    assert!(std::mem::offset_of!(Slot, used) == 8 * layout::USED_WORD);
    assert!(SIZE == size_of::<Header>() + SLOTS * size_of::<Slot>());
};

pub(crate) struct Ledger {
    base: *mut u8,
    /// Whether other processes share it (else a private map).
    shared: bool,
}

// SAFETY: the mapping lives as long as the process and is only reached
// through atomics.
unsafe impl Sync for Ledger {}
// SAFETY: as for Sync: the pointer is to a process-wide mapping, never
// unmapped once a Ledger holds it, reached only through atomics.
unsafe impl Send for Ledger {}

/// This process's slot, `usize::MAX` until claimed (and again in a child
/// after `fork`, which must not spend its parent's share), or [`ALONE`].
static MINE: AtomicUsize = AtomicUsize::new(usize::MAX);
static ATFORK: AtomicU32 = AtomicU32::new(0);
/// In [`MINE`]: no slot was free, the process counts in [`LOCAL`].
const ALONE: usize = usize::MAX - 1;
/// What the process holds when it has no slot in the ledger.
static LOCAL: Slot = Slot {
    owner: AtomicU64::new(0),
    start: AtomicU64::new(0),
    used: [const { AtomicU64::new(0) }; MAX_DEVICES],
};

impl Ledger {
    pub(crate) fn open(tmpdir: &CStr, eid: &[u8]) -> Ledger {
        if !eid.is_empty()
            && let Some(base) = map_shared(tmpdir, eid)
        {
            return Ledger { base, shared: true };
        }
        Ledger {
            base: map_private(),
            shared: false,
        }
    }

    /// Whether the environment's other processes share this ledger.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    fn header(&self) -> &Header {
        // SAFETY: the map is SIZE bytes, aligned to a page.
        unsafe { &*self.base.cast::<Header>() }
    }

    fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < SLOTS);
        // SAFETY: within the map.
        unsafe { &*self.base.add(size_of::<Header>()).cast::<Slot>().add(i) }
    }

    fn high(&self) -> usize {
        (self.header().high.load(SeqCst) as usize).min(SLOTS)
    }

    /// The slot this process counts in.
    fn own(&self, mine: usize) -> &Slot {
        if mine == ALONE {
            &LOCAL
        } else {
            self.slot(mine)
        }
    }

    /// Whether this process counts alone, every slot being taken.
    pub(crate) fn alone(&self) -> bool {
        MINE.load(SeqCst) == ALONE
    }

    /// What the environment's processes hold on a GPU (this one included,
    /// also when it counts alone).
    pub(crate) fn used(&self, index: usize) -> u64 {
        let local = if self.alone() {
            LOCAL.used[index].load(SeqCst)
        } else {
            0
        };
        (0..self.high())
            .map(|i| self.slot(i).used[index].load(SeqCst))
            .fold(local, u64::saturating_add)
    }

    /// Takes `size` bytes on a GPU unless that would pass `cap`.
    pub(crate) fn reserve(&self, index: usize, size: u64, cap: u64) -> bool {
        if size > cap {
            return false;
        }
        let own = &self.own(self.mine()).used[index];
        own.fetch_add(size, SeqCst);
        if self.used(index) <= cap || (self.reclaim_dead() > 0 && self.used(index) <= cap) {
            return true;
        }
        own.fetch_sub(size, SeqCst);
        false
    }

    /// Gives back bytes taken by [`Ledger::reserve`].
    pub(crate) fn release(&self, index: usize, size: u64) {
        let _ = self.own(self.mine()).used[index]
            .fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(size)));
    }

    /// This process's slot, claimed on first use; [`ALONE`] when none is
    /// free.
    fn mine(&self) -> usize {
        let i = MINE.load(SeqCst);
        if i != usize::MAX {
            return i;
        }
        if ATFORK.swap(1, SeqCst) == 0 {
            // SAFETY: registers a plain function.
            unsafe { libc::pthread_atfork(None, None, Some(forget_slot)) };
        }
        // Taking back the slots of processes that are gone first keeps the
        // used slots (which every reservation sums) as few as the live
        // processes.
        self.reclaim_dead();
        let i = self.claim().unwrap_or(ALONE);
        match MINE.compare_exchange(usize::MAX, i, SeqCst, SeqCst) {
            Ok(_) => i,
            // Another thread of the process was first: its slot it is.
            Err(first) => {
                if i != ALONE {
                    let slot = self.slot(i);
                    slot.start.store(0, SeqCst);
                    slot.owner.store(0, SeqCst);
                }
                first
            }
        }
    }

    fn claim(&self) -> Option<usize> {
        let pid = u64::from(std::process::id());
        for i in 0..SLOTS {
            let slot = self.slot(i);
            if slot.owner.load(SeqCst) == 0
                && slot.owner.compare_exchange(0, pid, SeqCst, SeqCst).is_ok()
            {
                slot.start
                    .store(start_time(pid as u32).unwrap_or(0), SeqCst);
                self.header().high.fetch_max(i as u64 + 1, SeqCst);
                return Some(i);
            }
        }
        None
    }

    /// Takes back the slots of processes that are gone; how many.
    pub(crate) fn reclaim_dead(&self) -> usize {
        let me = u64::from(std::process::id());
        let mut taken = 0;
        for i in 0..self.high() {
            let slot = self.slot(i);
            let owner = slot.owner.load(SeqCst);
            let pid = (owner & 0xffff_ffff) as u32;
            if owner == 0 || owner == me {
                continue;
            }
            let start = if owner & RECLAIMING != 0 {
                None
            } else {
                Some(slot.start.load(SeqCst)).filter(|&s| s != 0)
            };
            if alive(pid, start) {
                continue;
            }
            if slot
                .owner
                .compare_exchange(owner, RECLAIMING | me, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            for used in &slot.used {
                used.store(0, SeqCst);
            }
            slot.start.store(0, SeqCst);
            slot.owner.store(0, SeqCst);
            taken += 1;
        }
        taken
    }
}

extern "C" fn forget_slot() {
    MINE.store(usize::MAX, SeqCst);
    for used in &LOCAL.used {
        used.store(0, SeqCst);
    }
}

/// Whether a process lives and is the one that started at `start`.
fn alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks.
    if unsafe { libc::kill(raw, 0) } != 0 && errno() != libc::EPERM {
        return false;
    }
    match (start, start_time(pid)) {
        (Some(expected), Some(actual)) => expected == actual,
        _ => true,
    }
}

fn errno() -> i32 {
    // SAFETY: the thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks.
fn start_time(pid: u32) -> Option<u64> {
    let mut path = Text::<32>::new(b"/proc/");
    path.number(u64::from(pid));
    path.push(b"/stat");
    path.nul();
    let mut buf = [0u8; 1024];
    // SAFETY: a NUL-terminated path; reads into our buffer.
    let n = unsafe {
        let fd = libc::open(
            path.bytes().as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    crate::procstat::start_time_of_stat(buf.get(..usize::try_from(n).ok()?)?)
}

fn map_private() -> *mut u8 {
    // SAFETY: an anonymous map of our own.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        // Out of address space for 150 KiB: nothing sensible is left.
        std::process::abort();
    }
    p.cast()
}

/// Maps the environment's file, or nothing when it cannot be trusted.
fn map_shared(tmpdir: &CStr, eid: &[u8]) -> Option<*mut u8> {
    let name = file_name(eid);
    // SAFETY: plain system calls on our own buffers and descriptors.
    unsafe {
        let dir = libc::open(
            tmpdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return None;
        }
        let fd = libc::openat(
            dir,
            name.bytes().as_ptr().cast(),
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            0o600 as libc::c_uint,
        );
        libc::close(dir);
        if fd < 0 {
            return None;
        }
        let base = map_file(fd);
        libc::close(fd);
        let base = base?;
        let header = &*base.cast::<Header>();
        match header.magic.compare_exchange(0, MAGIC, SeqCst, SeqCst) {
            Ok(_) => Some(base),
            Err(MAGIC) => Some(base),
            Err(_) => {
                libc::munmap(base.cast(), SIZE);
                None
            }
        }
    }
}

unsafe fn map_file(fd: i32) -> Option<*mut u8> {
    // SAFETY: fstat/ftruncate/mmap on a descriptor we opened.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0
            || st.st_mode & libc::S_IFMT != libc::S_IFREG
            || st.st_uid != libc::geteuid()
            || st.st_mode & 0o077 != 0
            || st.st_nlink != 1
        {
            return None;
        }
        if st.st_size == 0 && libc::ftruncate(fd, SIZE as libc::off_t) != 0 {
            return None;
        }
        if st.st_size != 0 && st.st_size != SIZE as libc::off_t {
            return None;
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        (p != libc::MAP_FAILED).then_some(p.cast())
    }
}

/// `memcap-<uid>-<environment>\0`; an identifier with characters outside
/// `[A-Za-z0-9._-]` (or a long one) is replaced by its hash.
fn file_name(eid: &[u8]) -> Text<128> {
    let mut name = Text::<128>::new(layout::NAME_PREFIX.as_bytes());
    // SAFETY: no arguments, cannot fail.
    name.number(u64::from(unsafe { libc::geteuid() }));
    name.push(b"-");
    if layout::name_is_plain(eid) {
        name.push(eid);
    } else {
        name.push(b"h");
        name.number(layout::name_hash(eid));
    }
    name.nul();
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_plain_component() {
        let n = file_name(b"1a2b");
        assert!(n.bytes().starts_with(b"memcap-"));
        assert!(n.bytes().ends_with(b"-1a2b\0"));
        let n = file_name(b"../x");
        assert!(!n.bytes().contains(&b'/'));
    }

    #[test]
    fn own_start_time_is_read() {
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn private_ledger_caps() {
        let l = Ledger::open(c"/nonexistent", b"");
        assert!(l.reserve(0, 3, 5));
        assert!(!l.reserve(0, 3, 5));
        l.release(0, 3);
        assert!(l.reserve(0, 5, 5));
        assert_eq!(l.used(0), 5);
    }
}
