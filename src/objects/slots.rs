//! Zeroed slot arrays for the hash tables of windows and moving averages, on huge pages.
//!
//! Every flow updates random rows of tables of megabytes: with 4 KiB pages nearly every access
//! also misses the TLB, and a software prefetch that needs a page walk stalls the worker. So
//! an array of 2 MiB or more is mapped on its own, 2 MiB-aligned and rounded up to whole
//! 2 MiB pages, and marked for transparent huge pages (a hint; where the kernel has them only
//! for `madvise`d memory, as on Debian, this is what makes them used). Smaller arrays come from
//! the allocator. All-zero memory is an empty table, and a fresh mapping is zero without being
//! written, so a big table costs nothing until its pages are touched.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

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
    /// An `mmap` of this many bytes.
    Mapped(usize),
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
                return ZeroedSlots { ptr: ptr.cast(), len: n, source: Source::Mapped(mapped) };
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

    /// Whether the array sits on its own huge-page mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self.source, Source::Mapped(_))
    }
}

/// A table's next slot array (twice its size), made before the table needs it and faulted in
/// a page per new key: fresh memory costs its first write (measured on a virtual machine: 1.8 ms
/// per megabyte, 115 ms for the 64 MB of a 2-million-slot table), which would otherwise all
/// come at once right after the growth, as the keys land all over the new array, and stop the
/// worker for that long. A table makes it when half full and grows at 5/8, so it sees an
/// eighth of its slots' count in new keys in between: at a page per key the array (at most
/// 128 bytes per slot of the table) is ready long before it is needed.
pub struct NextArray<T> {
    slots: ZeroedSlots<T>,
    /// Bytes written once so far, from the start.
    touched: usize,
}

/// Bytes of the next array faulted in per new key.
const TOUCH_PER_KEY: usize = 4096;
/// Tables smaller than this make their next array when they grow (faulting it in is quick).
const NEXT_ARRAY_FROM_BYTES: usize = 1 << 20;

impl<T> NextArray<T> {
    /// Whether a table of `slots` holding `len` keys should be making its next array: it is
    /// half full, and big enough for this to matter.
    #[inline]
    pub fn due(len: usize, slots: &ZeroedSlots<T>) -> bool {
        len * 2 >= slots.len() && std::mem::size_of_val(&**slots) >= NEXT_ARRAY_FROM_BYTES
    }

    /// Makes the array of `n` slots in `next` if not yet there, and faults in one more page.
    ///
    /// # Safety
    /// As [`ZeroedSlots::new`]: all-zero bytes must be a valid value of `T`.
    pub unsafe fn prepare(next: &mut Option<Self>, n: usize) {
        // SAFETY: passed on to the caller.
        let a = next.get_or_insert_with(|| NextArray { slots: unsafe { ZeroedSlots::new(n) }, touched: 0 });
        let bytes = std::mem::size_of_val(&*a.slots);
        if a.touched < bytes {
            let base = a.slots.as_mut_ptr() as *mut u8;
            // SAFETY: within the array; a zero byte written over a zero byte changes nothing.
            unsafe { std::ptr::write_volatile(base.add(a.touched), 0) };
            a.touched += TOUCH_PER_KEY;
        }
    }

    /// The array made for growing into `n` slots, if there is one of that length (one of
    /// another length stays).
    pub fn take(next: &mut Option<Self>, n: usize) -> Option<ZeroedSlots<T>> {
        next.take_if(|a| a.slots.len() == n).map(|a| a.slots)
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
            match self.source {
                Source::None => {}
                Source::Heap(layout) => std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout),
                Source::Mapped(len) => {
                    libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, len);
                }
            }
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
}
