//! The driver's own functions, and the pointers handed to applications.
//!
//! Every hooked entry point has a slot here: its name, the real function
//! (looked up in the driver's own handle, so never ourselves), and our
//! hook. An application that asks `dlsym` or `cuGetProcAddress` for one of
//! them gets the hook instead; the hook calls the real function.

use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

pub(crate) type Dlsym = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Library {
    Cuda,
    Nvml,
}

impl Library {
    fn soname(self) -> &'static CStr {
        match self {
            Library::Cuda => c"libcuda.so.1",
            Library::Nvml => c"libnvidia-ml.so.1",
        }
    }
}

pub struct Entry {
    pub name: &'static CStr,
    pub library: Library,
    /// Null for functions we call but do not replace.
    pub hook: *const c_void,
}

// SAFETY: function addresses, never written.
unsafe impl Sync for Entry {}

static REAL: [AtomicPtr<c_void>; crate::hooks::ENTRIES.len()] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; crate::hooks::ENTRIES.len()];
static HANDLES: [AtomicPtr<c_void>; 2] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 2];

/// The real function of entry `i`; null when the driver lacks it.
pub(crate) fn real(i: usize) -> *mut c_void {
    let p = REAL[i].load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    resolve(i, false)
}

fn resolve(i: usize, loaded_only: bool) -> *mut c_void {
    let entry = &crate::hooks::ENTRIES[i];
    let handle = handle(entry.library, loaded_only);
    if handle.is_null() {
        return handle;
    }
    // SAFETY: the driver's handle and a NUL-terminated name.
    let p = unsafe { real_dlsym()(handle, entry.name.as_ptr()) };
    if !p.is_null() {
        REAL[i].store(p, Ordering::Release);
    }
    p
}

/// The driver's handle: the loaded copy, else (unless `loaded_only`) one
/// loaded now, as the application that called a hooked symbol expects.
fn handle(library: Library, loaded_only: bool) -> *mut c_void {
    let slot = &HANDLES[library as usize];
    let h = slot.load(Ordering::Acquire);
    if !h.is_null() {
        return h;
    }
    let name = library.soname().as_ptr();
    // SAFETY: dlopen of the system's driver library.
    let mut h = unsafe { libc::dlopen(name, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if h.is_null() && !loaded_only {
        // SAFETY: as above.
        h = unsafe { libc::dlopen(name, libc::RTLD_LAZY) };
    }
    if !h.is_null() {
        slot.store(h, Ordering::Release);
    }
    h
}

/// What `dlsym` should hand out for `name` when the real lookup found `p`:
/// our hook when `p` is the driver's function of that name and a cap is
/// enforced (the cap is read only once a hooked name is asked for).
pub(crate) fn substitute(name: &CStr, p: *mut c_void) -> *mut c_void {
    let bytes = name.to_bytes();
    if !(bytes.starts_with(b"cu") || bytes.starts_with(b"nvml")) {
        return p;
    }
    let Some(i) = crate::hooks::ENTRIES
        .iter()
        .position(|e| !e.hook.is_null() && e.name.to_bytes() == bytes)
    else {
        return p;
    };
    if crate::config::state().is_none() {
        return p;
    }
    let real = match REAL[i].load(Ordering::Acquire) {
        r if r.is_null() => resolve(i, true),
        r => r,
    };
    if real == p {
        crate::hooks::ENTRIES[i].hook.cast_mut()
    } else {
        p
    }
}

static REAL_DLSYM: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// glibc's `dlsym`, found with `dlvsym` (which we do not replace).
pub(crate) fn real_dlsym() -> Dlsym {
    let mut p = REAL_DLSYM.load(Ordering::Acquire);
    if p.is_null() {
        for version in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
            // SAFETY: looks up libc's own symbol past us.
            p = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
            if !p.is_null() {
                break;
            }
        }
        if p.is_null() {
            p = not_found as *mut c_void;
        }
        REAL_DLSYM.store(p, Ordering::Release);
    }
    // SAFETY: glibc's dlsym has this signature.
    unsafe { std::mem::transmute::<*mut c_void, Dlsym>(p) }
}

unsafe extern "C" fn not_found(_: *mut c_void, _: *const c_char) -> *mut c_void {
    std::ptr::null_mut()
}

/// For the `dlsym` entry below: the real function, for `RTLD_NEXT`.
extern "C" fn genv_memcap_real_dlsym() -> *mut c_void {
    real_dlsym() as *mut c_void
}

// `dlsym(RTLD_NEXT, …)` looks past the object that called it, which glibc
// tells from the return address: that lookup must reach glibc with the
// caller's return address intact, so it is a jump, not a call. Every
// other lookup goes through `dlsym_hook`.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub(crate) unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    std::arch::naked_asm!(
        "cmp rdi, -1",
        "jne {hook}",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        "2:",
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {find}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        hook = sym crate::hooks::dlsym_hook,
        real = sym REAL_DLSYM,
        find = sym genv_memcap_real_dlsym,
    )
}
