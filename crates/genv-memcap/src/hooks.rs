//! The interposed entry points. Each allocation reserves its size in the
//! environment's ledger before calling the driver (and gives it back when
//! the driver fails); each free gives back what its allocation took; the
//! queries report the cap as the total and the cap less the environment's
//! use as free. Without a cap every hook only calls through, and
//! `dlsym`/`cuGetProcAddress` hand out the driver's own functions.

use std::ffi::{CStr, c_char, c_void};

use crate::allocs::{self, Kind};
use crate::config::{State, state};
use crate::real::{Entry, Library, real, real_dlsym, substitute};

pub type CUresult = u32;
const SUCCESS: CUresult = 0;
const OUT_OF_MEMORY: CUresult = 2;
const NOT_FOUND: CUresult = 500;

macro_rules! entries {
    ($($index:ident = $name:ident $lib:ident $hook:expr;)*) => {
        #[allow(non_camel_case_types, dead_code)]
        #[repr(usize)]
        enum Index { $($index),* }
        $(const $index: usize = Index::$index as usize;)*
        pub static ENTRIES: [Entry; [$(stringify!($index)),*].len()] = [$(Entry {
            name: match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!(),
            },
            library: Library::$lib,
            hook: $hook,
        }),*];
    };
}

const NONE: *const c_void = std::ptr::null();

entries! {
    MEM_ALLOC = cuMemAlloc_v2 Cuda cuMemAlloc_v2 as *const c_void;
    MEM_ALLOC_PITCH = cuMemAllocPitch_v2 Cuda cuMemAllocPitch_v2 as *const c_void;
    MEM_ALLOC_MANAGED = cuMemAllocManaged Cuda cuMemAllocManaged as *const c_void;
    MEM_ALLOC_ASYNC = cuMemAllocAsync Cuda cuMemAllocAsync as *const c_void;
    MEM_ALLOC_ASYNC_PTSZ = cuMemAllocAsync_ptsz Cuda cuMemAllocAsync_ptsz as *const c_void;
    MEM_ALLOC_POOL = cuMemAllocFromPoolAsync Cuda cuMemAllocFromPoolAsync as *const c_void;
    MEM_ALLOC_POOL_PTSZ = cuMemAllocFromPoolAsync_ptsz Cuda cuMemAllocFromPoolAsync_ptsz as *const c_void;
    MEM_FREE = cuMemFree_v2 Cuda cuMemFree_v2 as *const c_void;
    MEM_FREE_ASYNC = cuMemFreeAsync Cuda cuMemFreeAsync as *const c_void;
    MEM_FREE_ASYNC_PTSZ = cuMemFreeAsync_ptsz Cuda cuMemFreeAsync_ptsz as *const c_void;
    MEM_CREATE = cuMemCreate Cuda cuMemCreate as *const c_void;
    MEM_RELEASE = cuMemRelease Cuda cuMemRelease as *const c_void;
    ARRAY_CREATE = cuArrayCreate_v2 Cuda cuArrayCreate_v2 as *const c_void;
    ARRAY_3D_CREATE = cuArray3DCreate_v2 Cuda cuArray3DCreate_v2 as *const c_void;
    ARRAY_DESTROY = cuArrayDestroy Cuda cuArrayDestroy as *const c_void;
    MEM_GET_INFO = cuMemGetInfo_v2 Cuda cuMemGetInfo_v2 as *const c_void;
    DEVICE_TOTAL_MEM = cuDeviceTotalMem_v2 Cuda cuDeviceTotalMem_v2 as *const c_void;
    GET_PROC_ADDRESS = cuGetProcAddress Cuda cuGetProcAddress as *const c_void;
    GET_PROC_ADDRESS_V2 = cuGetProcAddress_v2 Cuda cuGetProcAddress_v2 as *const c_void;
    NVML_MEMORY_INFO = nvmlDeviceGetMemoryInfo Nvml nvmlDeviceGetMemoryInfo as *const c_void;
    NVML_MEMORY_INFO_V2 = nvmlDeviceGetMemoryInfo_v2 Nvml nvmlDeviceGetMemoryInfo_v2 as *const c_void;
    CTX_GET_DEVICE = cuCtxGetDevice Cuda NONE;
    NVML_GET_INDEX = nvmlDeviceGetIndex Nvml NONE;
}

/// The real function of an entry, as a function of the given type.
macro_rules! real {
    ($index:expr, fn($($arg:ty),*)) => {{
        let p = real($index);
        // SAFETY: the driver's function of that name has this signature.
        (!p.is_null()).then(|| unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> CUresult>(p)
        })
    }};
}

/// The GPU index of the calling thread's current context.
fn current_index(s: &State) -> usize {
    let mut device = 0i32;
    if let Some(get) = real!(CTX_GET_DEVICE, fn(*mut i32)) {
        // SAFETY: writes one int.
        if unsafe { get(&mut device) } != SUCCESS {
            device = 0;
        }
    }
    s.index_of(device)
}

/// Reserves `size` on a GPU (the ordinal's, else the current context's),
/// runs the allocation and records it under the key it returns.
fn capped(
    kind: Kind,
    ordinal: Option<i32>,
    size: u64,
    allocate: impl FnOnce() -> (CUresult, u64),
) -> CUresult {
    let Some(s) = state() else {
        return allocate().0;
    };
    let index = ordinal.map_or_else(|| current_index(s), |o| s.index_of(o));
    if !s.reserve(index, size) {
        s.refused(index, size);
        return OUT_OF_MEMORY;
    }
    let (result, key) = allocate();
    if result != SUCCESS || key == 0 || !allocs::insert(kind, key, size, index) {
        s.ledger.release(index, size);
    }
    result
}

/// Gives back what an allocation took once the driver freed it.
fn freed(kind: Kind, key: u64, result: CUresult) -> CUresult {
    if result == SUCCESS
        && let Some(s) = state()
        && let Some((size, index)) = allocs::remove(kind, key)
    {
        s.ledger.release(index, size);
    }
    result
}

/// `*p` after a successful call, else 0.
unsafe fn out<T: Copy + Into<u64>>(result: CUresult, p: *const T) -> u64 {
    if result == SUCCESS && !p.is_null() {
        // SAFETY: the driver wrote it.
        unsafe { *p }.into()
    } else {
        0
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut u64, size: usize) -> CUresult {
    let Some(f) = real!(MEM_ALLOC, fn(*mut u64, usize)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `dptr` is read
    // back only after the driver succeeded.
    capped(Kind::Pointer, None, size as u64, || unsafe {
        let r = f(dptr, size);
        (r, out(r, dptr))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocManaged(dptr: *mut u64, size: usize, flags: u32) -> CUresult {
    let Some(f) = real!(MEM_ALLOC_MANAGED, fn(*mut u64, usize, u32)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `dptr` is read
    // back only after the driver succeeded.
    capped(Kind::Pointer, None, size as u64, || unsafe {
        let r = f(dptr, size, flags);
        (r, out(r, dptr))
    })
}

unsafe fn alloc_async(i: usize, dptr: *mut u64, size: usize, stream: *mut c_void) -> CUresult {
    let Some(f) = real!(i, fn(*mut u64, usize, *mut c_void)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `dptr` is read
    // back only after the driver succeeded.
    capped(Kind::Pointer, None, size as u64, || unsafe {
        let r = f(dptr, size, stream);
        (r, out(r, dptr))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut u64, size: usize, s: *mut c_void) -> CUresult {
    // SAFETY: the caller's arguments, as `alloc_async` takes them (this function's contract).
    unsafe { alloc_async(MEM_ALLOC_ASYNC, dptr, size, s) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(
    dptr: *mut u64,
    size: usize,
    s: *mut c_void,
) -> CUresult {
    // SAFETY: the caller's arguments, as `alloc_async` takes them (this function's contract).
    unsafe { alloc_async(MEM_ALLOC_ASYNC_PTSZ, dptr, size, s) }
}

unsafe fn alloc_pool(
    i: usize,
    dptr: *mut u64,
    size: usize,
    pool: *mut c_void,
    stream: *mut c_void,
) -> CUresult {
    let Some(f) = real!(i, fn(*mut u64, usize, *mut c_void, *mut c_void)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `dptr` is read
    // back only after the driver succeeded.
    capped(Kind::Pointer, None, size as u64, || unsafe {
        let r = f(dptr, size, pool, stream);
        (r, out(r, dptr))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut u64,
    size: usize,
    pool: *mut c_void,
    s: *mut c_void,
) -> CUresult {
    // SAFETY: the caller's arguments, as `alloc_pool` takes them (this function's contract).
    unsafe { alloc_pool(MEM_ALLOC_POOL, dptr, size, pool, s) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync_ptsz(
    dptr: *mut u64,
    size: usize,
    pool: *mut c_void,
    s: *mut c_void,
) -> CUresult {
    // SAFETY: the caller's arguments, as `alloc_pool` takes them (this function's contract).
    unsafe { alloc_pool(MEM_ALLOC_POOL_PTSZ, dptr, size, pool, s) }
}

/// The pitch is the driver's choice: reserve a guess (rows of 512-byte
/// multiples), then settle the difference.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut u64,
    pitch: *mut usize,
    width: usize,
    height: usize,
    element: u32,
) -> CUresult {
    let Some(f) = real!(MEM_ALLOC_PITCH, fn(*mut u64, *mut usize, usize, usize, u32)) else {
        return NOT_FOUND;
    };
    let guess = (width as u64)
        .next_multiple_of(512)
        .saturating_mul(height as u64);
    let mut settled = guess;
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `dptr` is read
    // back only after the driver succeeded.
    let result = capped(Kind::Pointer, None, guess, || unsafe {
        let r = f(dptr, pitch, width, height, element);
        (r, out(r, dptr))
    });
    if result == SUCCESS && !pitch.is_null() {
        // SAFETY: the driver wrote the pitch on success, and `pitch` is not null.
        settled = unsafe { *pitch as u64 }.saturating_mul(height as u64);
    }
    if settled != guess {
        let Some(s) = state() else { return result };
        // SAFETY: `out` reads `dptr` only after the driver succeeded and
        // wrote it.
        let key = unsafe { out(result, dptr) };
        let Some((_, index)) = allocs::remove(Kind::Pointer, key) else {
            return result;
        };
        s.ledger.release(index, guess);
        if !s.reserve(index, settled) {
            if let Some(free) = real!(MEM_FREE, fn(u64)) {
                // SAFETY: `key` is the allocation the driver just made for this call, freed
                // once and never handed to the caller's use.
                unsafe { free(key) };
            }
            s.refused(index, settled);
            return OUT_OF_MEMORY;
        }
        if !allocs::insert(Kind::Pointer, key, settled, index) {
            s.ledger.release(index, settled);
        }
    }
    result
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: u64) -> CUresult {
    let Some(f) = real!(MEM_FREE, fn(u64)) else {
        return NOT_FOUND;
    };
    // SAFETY: the application's own pointer.
    freed(Kind::Pointer, dptr, unsafe { f(dptr) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: u64, stream: *mut c_void) -> CUresult {
    let Some(f) = real!(MEM_FREE_ASYNC, fn(u64, *mut c_void)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    freed(Kind::Pointer, dptr, unsafe { f(dptr, stream) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: u64, stream: *mut c_void) -> CUresult {
    let Some(f) = real!(MEM_FREE_ASYNC_PTSZ, fn(u64, *mut c_void)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    freed(Kind::Pointer, dptr, unsafe { f(dptr, stream) })
}

/// The start of `CUmemAllocationProp`: where the memory lives.
#[repr(C)]
pub struct AllocationProp {
    kind: i32,
    handle_types: i32,
    location_type: i32,
    location_id: i32,
}

const LOCATION_DEVICE: i32 = 1;

/// The virtual-memory path (PyTorch's expandable segments): physical
/// memory on a device is capped; host memory is not ours to count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut u64,
    size: usize,
    prop: *const AllocationProp,
    flags: u64,
) -> CUresult {
    let Some(f) = real!(MEM_CREATE, fn(*mut u64, usize, *const AllocationProp, u64)) else {
        return NOT_FOUND;
    };
    // SAFETY: the application's description of the allocation.
    let device = unsafe { prop.as_ref() }
        .filter(|p| p.location_type == LOCATION_DEVICE)
        .map(|p| p.location_id);
    let Some(device) = device else {
        // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which
        // has this signature; the caller's contract with the driver is this function's.
        return unsafe { f(handle, size, prop, flags) };
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `handle` is
    // read back only after the driver succeeded.
    capped(Kind::Handle, Some(device), size as u64, || unsafe {
        let r = f(handle, size, prop, flags);
        (r, out(r, handle))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRelease(handle: u64) -> CUresult {
    let Some(f) = real!(MEM_RELEASE, fn(u64)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    freed(Kind::Handle, handle, unsafe { f(handle) })
}

/// `CUDA_ARRAY_DESCRIPTOR`.
#[repr(C)]
pub struct ArrayDescriptor {
    width: usize,
    height: usize,
    format: u32,
    channels: u32,
}

/// `CUDA_ARRAY3D_DESCRIPTOR`.
#[repr(C)]
pub struct Array3dDescriptor {
    width: usize,
    height: usize,
    depth: usize,
    format: u32,
    channels: u32,
    flags: u32,
}

/// Bytes per channel of a `CUarray_format`; 4 for the others.
fn format_bytes(format: u32) -> u64 {
    match format {
        0x01 | 0x08 => 1,
        0x02 | 0x09 | 0x10 => 2,
        _ => 4,
    }
}

fn array_size(dims: [usize; 3], format: u32, channels: u32) -> u64 {
    dims.iter()
        .map(|&d| (d as u64).max(1))
        .fold(format_bytes(format), u64::saturating_mul)
        .saturating_mul(u64::from(channels.max(1)))
}

fn array_key(result: CUresult, array: *mut *mut c_void) -> u64 {
    // SAFETY: written by the driver on success.
    unsafe { out(result, array.cast::<u64>().cast_const()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArrayCreate_v2(
    array: *mut *mut c_void,
    desc: *const ArrayDescriptor,
) -> CUresult {
    let Some(f) = real!(ARRAY_CREATE, fn(*mut *mut c_void, *const ArrayDescriptor)) else {
        return NOT_FOUND;
    };
    // SAFETY: the application's descriptor.
    let Some(d) = (unsafe { desc.as_ref() }) else {
        // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which
        // has this signature; the caller's contract with the driver is this function's.
        return unsafe { f(array, desc) };
    };
    let size = array_size([d.width, d.height, 1], d.format, d.channels);
    capped(Kind::Array, None, size, || {
        // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which
        // has this signature; the caller's contract with the driver is this function's.
        let r = unsafe { f(array, desc) };
        (r, array_key(r, array))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArray3DCreate_v2(
    array: *mut *mut c_void,
    desc: *const Array3dDescriptor,
) -> CUresult {
    let Some(f) = real!(
        ARRAY_3D_CREATE,
        fn(*mut *mut c_void, *const Array3dDescriptor)
    ) else {
        return NOT_FOUND;
    };
    // SAFETY: the application's descriptor.
    let Some(d) = (unsafe { desc.as_ref() }) else {
        // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which
        // has this signature; the caller's contract with the driver is this function's.
        return unsafe { f(array, desc) };
    };
    let size = array_size([d.width, d.height, d.depth], d.format, d.channels);
    capped(Kind::Array, None, size, || {
        // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which
        // has this signature; the caller's contract with the driver is this function's.
        let r = unsafe { f(array, desc) };
        (r, array_key(r, array))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArrayDestroy(array: *mut c_void) -> CUresult {
    let Some(f) = real!(ARRAY_DESTROY, fn(*mut c_void)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    freed(Kind::Array, array as u64, unsafe { f(array) })
}

/// Total: the cap (or less, on a smaller GPU). Free: what the cap leaves
/// the environment (or less, when the GPU itself has less).
fn capped_info(s: &State, index: usize, free: u64, total: u64) -> (u64, u64, u64) {
    s.ledger.reclaim_dead();
    let used = s.ledger.used(index);
    let total = total.min(s.cap);
    (free.min(s.cap.saturating_sub(used)), total, used)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    let Some(f) = real!(MEM_GET_INFO, fn(*mut usize, *mut usize)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    let result = unsafe { f(free, total) };
    if let (SUCCESS, Some(s)) = (result, state())
        && !free.is_null()
        && !total.is_null()
    {
        // SAFETY: written by the driver.
        unsafe {
            let (f, t, _) = capped_info(s, current_index(s), *free as u64, *total as u64);
            (*free, *total) = (f as usize, t as usize);
        }
    }
    result
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: i32) -> CUresult {
    let Some(f) = real!(DEVICE_TOTAL_MEM, fn(*mut usize, i32)) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    let result = unsafe { f(bytes, device) };
    if let (SUCCESS, Some(s)) = (result, state())
        && !bytes.is_null()
    {
        // SAFETY: written by the driver.
        unsafe { *bytes = (*bytes).min(s.cap as usize) };
    }
    result
}

/// Which hooked variant `cuGetProcAddress` returns for a name, a CUDA
/// version and flags, by the driver's versioning rules.
fn variant(symbol: &[u8], version: i32, flags: u64) -> Option<usize> {
    // CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM.
    let ptsz = flags & 2 != 0;
    let v2 = version >= 3020;
    Some(match symbol {
        b"cuMemAlloc" if v2 => MEM_ALLOC,
        b"cuMemAllocPitch" if v2 => MEM_ALLOC_PITCH,
        b"cuMemFree" if v2 => MEM_FREE,
        b"cuMemGetInfo" if v2 => MEM_GET_INFO,
        b"cuDeviceTotalMem" if v2 => DEVICE_TOTAL_MEM,
        b"cuArrayCreate" if v2 => ARRAY_CREATE,
        b"cuArray3DCreate" if v2 => ARRAY_3D_CREATE,
        b"cuMemAllocManaged" => MEM_ALLOC_MANAGED,
        b"cuMemAllocAsync" if ptsz => MEM_ALLOC_ASYNC_PTSZ,
        b"cuMemAllocAsync" => MEM_ALLOC_ASYNC,
        b"cuMemAllocFromPoolAsync" if ptsz => MEM_ALLOC_POOL_PTSZ,
        b"cuMemAllocFromPoolAsync" => MEM_ALLOC_POOL,
        b"cuMemFreeAsync" if ptsz => MEM_FREE_ASYNC_PTSZ,
        b"cuMemFreeAsync" => MEM_FREE_ASYNC,
        b"cuMemCreate" => MEM_CREATE,
        b"cuMemRelease" => MEM_RELEASE,
        b"cuArrayDestroy" => ARRAY_DESTROY,
        b"cuGetProcAddress" if version >= 12000 => GET_PROC_ADDRESS_V2,
        b"cuGetProcAddress" => GET_PROC_ADDRESS,
        _ => return None,
    })
}

/// After the driver answered `cuGetProcAddress`: our hook in place of its
/// function, when a cap is enforced.
unsafe fn hand_out(
    result: CUresult,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: u64,
) {
    if result != SUCCESS || symbol.is_null() || pfn.is_null() || state().is_none() {
        return;
    }
    // SAFETY: the application's NUL-terminated name; the driver wrote pfn.
    unsafe {
        if (*pfn).is_null() {
            return;
        }
        if let Some(i) = variant(CStr::from_ptr(symbol).to_bytes(), version, flags) {
            *pfn = ENTRIES[i].hook.cast_mut();
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: u64,
) -> CUresult {
    let Some(f) = real!(
        GET_PROC_ADDRESS,
        fn(*const c_char, *mut *mut c_void, i32, u64)
    ) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `hand_out`
    // reads `symbol` and writes `pfn` only after the driver succeeded with them.
    unsafe {
        let result = f(symbol, pfn, version, flags);
        hand_out(result, symbol, pfn, version, flags);
        result
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: u64,
    status: *mut i32,
) -> CUresult {
    let Some(f) = real!(
        GET_PROC_ADDRESS_V2,
        fn(*const c_char, *mut *mut c_void, i32, u64, *mut i32)
    ) else {
        return NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's. `hand_out`
    // reads `symbol` and writes `pfn` only after the driver succeeded with them.
    unsafe {
        let result = f(symbol, pfn, version, flags, status);
        hand_out(result, symbol, pfn, version, flags);
        result
    }
}

/// `nvmlMemory_t`.
#[repr(C)]
pub struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct NvmlMemoryV2 {
    version: u32,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

/// NVML numbers GPUs as genv does; the environment's use is its `used`.
fn nvml_capped(device: *mut c_void, free: &mut u64, total: &mut u64, used: &mut u64) {
    let Some(s) = state() else { return };
    let Some(get_index) = real!(NVML_GET_INDEX, fn(*mut c_void, *mut u32)) else {
        return;
    };
    let mut index = 0u32;
    // SAFETY: the application's device handle; writes one int.
    if unsafe { get_index(device, &mut index) } != SUCCESS {
        return;
    }
    let index = (index as usize).min(crate::config::MAX_DEVICES - 1);
    (*free, *total, *used) = capped_info(s, index, *free, *total);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: *mut c_void,
    memory: *mut NvmlMemory,
) -> u32 {
    let Some(f) = real!(NVML_MEMORY_INFO, fn(*mut c_void, *mut NvmlMemory)) else {
        return 13; // NVML_ERROR_FUNCTION_NOT_FOUND
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    let result = unsafe { f(device, memory) };
    // SAFETY: written by NVML on success.
    if let (SUCCESS, Some(m)) = (result, unsafe { memory.as_mut() }) {
        nvml_capped(device, &mut m.free, &mut m.total, &mut m.used);
    }
    result
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: *mut c_void,
    memory: *mut NvmlMemoryV2,
) -> u32 {
    let Some(f) = real!(NVML_MEMORY_INFO_V2, fn(*mut c_void, *mut NvmlMemoryV2)) else {
        return 13;
    };
    // SAFETY: the caller's arguments, passed unchanged to the driver's own function, which has
    // this signature; the caller's contract with the driver is this function's.
    let result = unsafe { f(device, memory) };
    // SAFETY: written by NVML on success.
    if let (SUCCESS, Some(m)) = (result, unsafe { memory.as_mut() }) {
        nvml_capped(device, &mut m.free, &mut m.total, &mut m.used);
    }
    result
}

/// `dlsym` for every handle but `RTLD_NEXT` (see `real.rs`): the driver's
/// hooked functions come back as our hooks when a cap is enforced.
pub(crate) unsafe extern "C" fn dlsym_hook(
    handle: *mut c_void,
    name: *const c_char,
) -> *mut c_void {
    // SAFETY: glibc's dlsym with the caller's arguments.
    let p = unsafe { real_dlsym()(handle, name) };
    if p.is_null() || name.is_null() {
        return p;
    }
    // SAFETY: a NUL-terminated name (dlsym found it).
    substitute(unsafe { CStr::from_ptr(name) }, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_address_variants_follow_the_driver() {
        assert_eq!(variant(b"cuMemAlloc", 12040, 0), Some(MEM_ALLOC));
        assert_eq!(variant(b"cuMemAlloc", 3010, 0), None);
        assert_eq!(
            variant(b"cuMemAllocAsync", 12040, 2),
            Some(MEM_ALLOC_ASYNC_PTSZ)
        );
        assert_eq!(variant(b"cuMemAllocAsync", 12040, 1), Some(MEM_ALLOC_ASYNC));
        assert_eq!(
            variant(b"cuGetProcAddress", 11080, 0),
            Some(GET_PROC_ADDRESS)
        );
        assert_eq!(
            variant(b"cuGetProcAddress", 12000, 0),
            Some(GET_PROC_ADDRESS_V2)
        );
        assert_eq!(variant(b"cuLaunchKernel", 12040, 0), None);
        for (i, entry) in ENTRIES.iter().enumerate() {
            // Every hooked entry is what some lookup hands out.
            if !entry.hook.is_null() && !entry.name.to_bytes().starts_with(b"nvml") {
                let name = entry.name.to_bytes();
                let base = name
                    .strip_suffix(b"_ptsz")
                    .or_else(|| name.strip_suffix(b"_v2"))
                    .unwrap_or(name);
                let flags = if name.ends_with(b"_ptsz") { 2 } else { 0 };
                // cuGetProcAddress without _v2 is CUDA 11's.
                let version = if name == b"cuGetProcAddress" {
                    11080
                } else {
                    12040
                };
                assert_eq!(variant(base, version, flags), Some(i), "{:?}", entry.name);
            }
        }
    }

    #[test]
    fn array_sizes() {
        assert_eq!(array_size([1000, 1000, 1], 0x20, 1), 4_000_000);
        assert_eq!(array_size([1000, 0, 0], 0x01, 4), 4_000);
        assert_eq!(array_size([usize::MAX, usize::MAX, 2], 0x20, 4), u64::MAX);
    }
}
