//! Zeroed slot arrays for the hash tables of windows and moving averages, on huge pages.
//!
//! Every flow updates random rows of tables of megabytes: with 4 KiB pages nearly every access
//! also misses the TLB, and a software prefetch that needs a page walk stalls the worker. So
//! an array of 2 MiB or more is mapped on its own, 2 MiB-aligned and rounded up to whole
//! 2 MiB pages, and marked for transparent huge pages (a hint; where the kernel has them only
//! for `madvise`d memory, as on Debian, this is what makes them used). Smaller arrays come from
//! the allocator. All-zero memory is an empty table, and a fresh mapping is zero without being
//! written, so a big table costs nothing until its pages are touched.
//!
//! But that first touch is slow where huge pages must first be assembled (measured on a
//! virtual machine: 2.7 ms per megabyte for memory never used before, 0.05 ms for huge pages
//! freed earlier, 0.4 ms on 4 KiB pages), and a worker that writes fresh memory at random
//! stops receiving for that long. So an array made ahead of its use (a table's next array, a
//! window's next table) is made and faulted in by the memory thread ([`in_background`]) with
//! `MADV_POPULATE_WRITE`, which allocates pages without writing to them: safe beside a worker
//! already using the array. That thread also frees the big arrays a worker is done with: while
//! the kernel faults pages in it holds the address space, and a worker's own `mmap` or
//! `munmap` waited for it (20-45 ms measured).

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length array of `T` that started all-zero.
pub struct ZeroedSlots<T> {
    ptr: NonNull<T>,
    len: usize,
    /// How the memory was obtained, to give it back the same way.
    source: Source,
}

enum Source {
    /// Nothing allocated (no elements, or zero-sized ones).
    None,
    Heap(Layout),
    /// A mapping of its own, unmapped when the array and the helper faulting it in are done.
    Mapped(Arc<Mapping>),
}

/// An `mmap`ed range, unmapped on drop.
pub struct Mapping {
    start: *mut u8,
    len: usize,
}

// SAFETY: the range is plain memory; who reads or writes it is the owning array's business
// (the helper thread only asks the kernel to allocate its pages).
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself has no interior state.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `map_huge` and is unmapped once, here.
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}

// SAFETY: the array owns its elements like a `Box<[T]>` does.
unsafe impl<T: Send> Send for ZeroedSlots<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for ZeroedSlots<T> {}

impl<T> ZeroedSlots<T> {
    /// `n` all-zero elements.
    ///
    /// # Safety
    /// All-zero bytes must be a valid value of `T`.
    pub unsafe fn new(n: usize) -> Self {
        let layout = Layout::array::<T>(n).expect("table size fits memory");
        if layout.size() == 0 {
            return ZeroedSlots { ptr: NonNull::dangling(), len: n, source: Source::None };
        }
        if layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE {
            if let Some((ptr, mapped)) = map_huge(layout.size()) {
                let mapping = Arc::new(Mapping { start: ptr.as_ptr(), len: mapped });
                return ZeroedSlots { ptr: ptr.cast(), len: n, source: Source::Mapped(mapping) };
            }
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
        let Some(ptr) = NonNull::new(p) else { std::alloc::handle_alloc_error(layout) };
        ZeroedSlots { ptr, len: n, source: Source::Heap(layout) }
    }

    /// Sets every byte back to zero (the array is then as new, its memory already mapped).
    ///
    /// Only for element types whose all-zero value is valid, as [`ZeroedSlots::new`] requires.
    pub fn fill_zero(&mut self) {
        // SAFETY: `len` elements live at `ptr`; all-zero bytes are a valid `T` (see `new`).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.len) }
    }

    /// What faults this array in when run (see [`Populate`]); `None` for an array of the
    /// allocator's (small: its pages come in at their first write).
    pub fn populator(&self) -> Option<Populate> {
        match &self.source {
            Source::Mapped(m) => Some(Populate(m.clone())),
            _ => None,
        }
    }

    /// Whether the array sits on its own huge-page mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self.source, Source::Mapped(_))
    }
}

/// A table's next slot array (twice its size), made before the table needs it: by the
/// memory thread, which also faults it in (see the module's doc), or, where it cannot, by the
/// worker, which then faults it in a page per new key. Otherwise fresh memory's first writes
/// would all come at once right after the growth, as the keys land all over the new array,
/// and stop the worker that long. A table makes it when half full and grows at 5/8, so it sees
/// an eighth of its slots' count in new keys in between: at a page per key the array (at most
/// 128 bytes per slot of the table) is ready long before it is needed.
pub enum NextArray<T> {
    /// Being made and faulted in by the memory thread: there once made.
    Background { n: usize, made: Arc<parking_lot::Mutex<Option<ZeroedSlots<T>>>> },
    /// Made here; its first `touched` bytes have been written once.
    Here { slots: ZeroedSlots<T>, touched: usize },
}

/// Bytes of the next array faulted in per new key, when made here.
const TOUCH_PER_KEY: usize = 4096;
/// Tables smaller than this make their next array when they grow (faulting it in is quick).
const NEXT_ARRAY_FROM_BYTES: usize = 1 << 20;

impl<T: Send + 'static> NextArray<T> {
    /// Whether a table of `slots` holding `len` keys should be making its next array: it is
    /// half full, and big enough for this to matter.
    #[inline]
    pub fn due(len: usize, slots: &ZeroedSlots<T>) -> bool {
        len * 2 >= slots.len() && std::mem::size_of_val(&**slots) >= NEXT_ARRAY_FROM_BYTES
    }

    /// Has the array of `n` slots made in `next` if not yet asked for; when made here, faults
    /// in one more page of it.
    ///
    /// # Safety
    /// As [`ZeroedSlots::new`]: all-zero bytes must be a valid value of `T`.
    pub unsafe fn prepare(next: &mut Option<Self>, n: usize) {
        let a = next.get_or_insert_with(|| {
            let made = Arc::new(parking_lot::Mutex::new(None));
            // SAFETY (both): passed on to the caller.
            let queued = make_in_background(made.clone(), move || unsafe { ZeroedSlots::new(n) }, |to, slots| *to.lock() = Some(slots));
            if queued {
                return NextArray::Background { n, made };
            }
            NextArray::Here { slots: unsafe { ZeroedSlots::new(n) }, touched: 0 }
        });
        if let NextArray::Here { slots, touched } = a {
            if *touched < std::mem::size_of_val(&**slots) {
                let base = slots.as_mut_ptr() as *mut u8;
                // SAFETY: within the array; a zero byte written over a zero byte changes nothing.
                unsafe { std::ptr::write_volatile(base.add(*touched), 0) };
                *touched += TOUCH_PER_KEY;
            }
        }
    }

    /// Whether [`NextArray::prepare`] has more to do: the array not asked for yet, or made
    /// here and not all faulted in (a table need not call it per new key otherwise).
    pub fn wants_more(next: &Option<Self>) -> bool {
        match next {
            None => true,
            Some(NextArray::Background { .. }) => false,
            Some(NextArray::Here { slots, touched }) => *touched < std::mem::size_of_val(&**slots),
        }
    }

    /// The array made for growing into `n` slots, if it is ready and of that length (one of
    /// another length stays; one still being made is given up: the table makes its own).
    pub fn take(next: &mut Option<Self>, n: usize) -> Option<ZeroedSlots<T>> {
        match next.take_if(|a| match a {
            NextArray::Background { n: m, .. } => *m == n,
            NextArray::Here { slots, .. } => slots.len() == n,
        })? {
            NextArray::Background { made, .. } => made.lock().take(),
            NextArray::Here { slots, .. } => Some(slots),
        }
    }
}

/// Has the memory thread make an array-holding value with `make`, hand it to `owner` with
/// `deliver`, then fault the array in: unless `owner`'s last other holder has let it go by then
/// (the table grew without it, the window went), in which case nothing is made. The job does
/// not hold the array while faulting it in, so that stops as soon as the owner drops it.
/// Returns false (counted in `PREFAULT_SKIPPED`) when the job cannot be queued: the caller
/// then makes its own.
pub fn make_in_background<O, V>(owner: Arc<O>, make: impl FnOnce() -> V + Send + 'static, deliver: impl FnOnce(&O, V) + Send + 'static) -> bool
where
    O: Send + Sync + 'static,
    V: HasSlots,
{
    let queued = in_background(move || {
        if Arc::strong_count(&owner) == 1 {
            return;
        }
        let v = make();
        let populate = v.populator();
        deliver(&owner, v);
        drop(owner);
        if let Some(p) = populate {
            p.run();
        }
    });
    if !queued {
        PREFAULT_SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
    queued
}

/// A value holding a slot array that [`make_in_background`] can fault in.
pub trait HasSlots: Send + 'static {
    fn populator(&self) -> Option<Populate>;
}

impl<T: Send + 'static> HasSlots for ZeroedSlots<T> {
    fn populator(&self) -> Option<Populate> {
        ZeroedSlots::populator(self)
    }
}

/// Frees an array on the memory thread (a big one's `munmap` waits for the address space,
/// which the kernel may hold while it faults pages in for another thread), or here when it is
/// small or the thread is busy.
pub fn free_in_background<T: Send + 'static>(slots: ZeroedSlots<T>) {
    if slots.is_mapped() {
        // (When it cannot be queued, the job, and the array with it, is dropped right here.)
        in_background(move || drop(slots));
    }
}

/// Bytes the helper thread faulted in (for metrics).
pub static PREFAULTED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Arrays made ahead that were left to their first writes: the helper's queue full, or the
/// kernel without `MADV_POPULATE_WRITE` (for metrics).
pub static PREFAULT_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Set when the kernel refused `MADV_POPULATE_WRITE` (before Linux 5.14): arrays are then
/// faulted in by their first writes.
static POPULATE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
/// `MADV_POPULATE_WRITE` (Linux 5.14), for a libc crate that lacks it.
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// Faulted in per call: one huge page, so that a mapping given up meanwhile is not faulted in
/// whole, and a worker's own `mmap` or `munmap` (which wait for the address space while the
/// kernel populates) waits for one page's fault at most.
const POPULATE_CHUNK: usize = 2 << 20;
/// Jobs waiting for the memory thread (more are done by the caller, or not at all).
const JOB_QUEUE: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the memory thread (started at first use), which makes, faults in and frees
/// big arrays for the workers. Returns false, and drops the job, when it cannot be queued.
pub fn in_background(job: impl FnOnce() + Send + 'static) -> bool {
    static TX: OnceLock<Option<std::sync::mpsc::SyncSender<Job>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(JOB_QUEUE);
        let spawned = std::thread::Builder::new().name("prefault".into()).spawn(move || {
            for job in rx {
                job();
            }
        });
        spawned.ok().map(|_| tx)
    });
    tx.as_ref().is_some_and(|tx| tx.try_send(Box::new(job)).is_ok())
}

/// Faults a mapped array in on the thread that runs it, a chunk at a time, as long as the
/// array still holds the mapping. `MADV_POPULATE_WRITE` allocates the pages not yet there and
/// changes no byte of those that are: safe while the array is in use elsewhere.
pub struct Populate(Arc<Mapping>);

impl Populate {
    pub fn run(self) {
        let m = &self.0;
        let mut at = 0;
        while at < m.len && Arc::strong_count(m) > 1 && !POPULATE_UNSUPPORTED.load(Ordering::Relaxed) {
            let n = POPULATE_CHUNK.min(m.len - at);
            // SAFETY: within the mapping, kept alive by `m`.
            let rc = unsafe { libc::madvise(m.start.add(at) as *mut libc::c_void, n, MADV_POPULATE_WRITE) };
            if rc != 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    POPULATE_UNSUPPORTED.store(true, Ordering::Relaxed);
                    PREFAULT_SKIPPED.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            at += n;
            PREFAULTED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Maps `size` bytes (rounded up to whole huge pages) at a huge-page boundary, marked for
/// transparent huge pages; returns the mapping and its length. `None` when the kernel refuses
/// the mapping.
fn map_huge(size: usize) -> Option<(NonNull<u8>, usize)> {
    let len = size.next_multiple_of(HUGE_PAGE);
    // Over-map by one huge page, then cut the unaligned head and the tail off.
    let over = len + HUGE_PAGE;
    // SAFETY: an anonymous private mapping chosen by the kernel touches no existing memory.
    let raw = unsafe {
        libc::mmap(std::ptr::null_mut(), over, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = (raw as usize).next_multiple_of(HUGE_PAGE);
    let head = start - raw as usize;
    let tail = over - head - len;
    // SAFETY: both ranges are parts of the mapping just made, outside [start, start + len).
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // A hint: without huge pages the table still works, only slower.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    NonNull::new(start as *mut u8).map(|p| (p, len))
}

impl<T> Drop for ZeroedSlots<T> {
    fn drop(&mut self) {
        // SAFETY: the elements are initialised (they started zeroed, a valid value) and are
        // dropped once; then the memory goes back the way it came.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len));
            if let Source::Heap(layout) = self.source {
                std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout);
            }
            // (A mapping goes with its last holder.)
        }
    }
}

impl<T> Deref for ZeroedSlots<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements live at `ptr` while `self` does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for ZeroedSlots<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_huge_arrays_start_zeroed_and_keep_writes() {
        for n in [0usize, 1, 1000, (HUGE_PAGE / 8) + 3, 3 * HUGE_PAGE / 8] {
            // SAFETY: zero is a valid u64.
            let mut a = unsafe { ZeroedSlots::<u64>::new(n) };
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|&x| x == 0));
            assert_eq!(a.is_mapped(), n * 8 >= HUGE_PAGE, "{n}");
            if a.is_mapped() {
                assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0, "huge-page aligned");
            }
            for (i, x) in a.iter_mut().enumerate() {
                *x = i as u64;
            }
            assert!(a.iter().enumerate().all(|(i, &x)| x == i as u64));
        }
    }

    /// Pages of the array in memory (`mincore`).
    fn resident_pages<T>(a: &ZeroedSlots<T>) -> usize {
        let bytes = std::mem::size_of_val(&**a);
        let mut v = vec![0u8; bytes.div_ceil(4096)];
        // SAFETY: the range is the array's (page-aligned: a mapping), `v` has a byte per page.
        let rc = unsafe { libc::mincore(a.as_ptr() as *mut libc::c_void, bytes, v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn a_helper_faults_a_mapped_array_in_without_changing_it() {
        // SAFETY: zero is a valid u64.
        let mut a = unsafe { ZeroedSlots::<u64>::new(3 * POPULATE_CHUNK / 8) };
        a[5] = 7; // written before: kept
        let pages = std::mem::size_of_val(&*a) / 4096;
        assert!(resident_pages(&a) < pages);
        let counted = PREFAULTED_BYTES.load(Ordering::Relaxed);
        let populate = a.populator().expect("a mapped array");
        assert!(in_background(move || populate.run()));
        a[pages * 512 - 1] = 9; // written meanwhile: kept
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while resident_pages(&a) < pages && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(resident_pages(&a), pages);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while PREFAULTED_BYTES.load(Ordering::Relaxed) < counted + (pages * 4096) as u64 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(PREFAULTED_BYTES.load(Ordering::Relaxed) >= counted + (pages * 4096) as u64, "counted for the metrics");
        assert_eq!((a[5], a[pages * 512 - 1]), (7, 9));
        assert_eq!(a.iter().filter(|&&x| x != 0).count(), 2);
        assert!(!POPULATE_UNSUPPORTED.load(Ordering::Relaxed), "MADV_POPULATE_WRITE needs Linux 5.14");
        // An array of the allocator's is left to its first writes.
        // SAFETY: as above.
        assert!(unsafe { ZeroedSlots::<u64>::new(1000) }.populator().is_none());
    }
}
