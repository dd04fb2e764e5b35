//! Item encoding for the log: postcard, written straight after what a reused buffer
//! already holds by an encoder that keeps its write position in a register (this crate's
//! one `unsafe` outside the ring; the log's own is in `vinequeue-wal`'s `mmap.rs`), and
//! decoding back.

use crate::error::Error;
use vinequeue_storage::CodecError;

/// Encoding of items for the log, captured where the serde bounds are known so that the
/// rest of the queue (and `Drop`) does not need them.
pub(crate) struct Codec<T> {
    /// Appends the encoding of an item to the buffer.
    pub(crate) encode_into: fn(&T, &mut Vec<u8>) -> Result<(), Error>,
    pub(crate) decode: fn(&[u8]) -> Result<T, Error>,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> {
    pub(crate) fn postcard() -> Self {
        Codec {
            encode_into: |item, buf| {
                postcard::serialize_with_flavor(item, AppendTo::new(buf)).map_err(|e| {
                    Error::Codec(CodecError::with_source("the item does not encode", e))
                })
            },
            decode: |bytes| {
                postcard::from_bytes(bytes).map_err(|e| {
                    Error::Codec(CodecError::with_source(
                        "the bytes do not decode as the item type",
                        e,
                    ))
                })
            },
        }
    }
}

/// A postcard output that appends to a reused buffer.
///
/// Serde hands arrays (byte arrays included) to the encoder one element at a time, so
/// `try_push` is the hot path. It writes through a cursor kept in the flavor itself rather
/// than through the `Vec`'s fields behind a reference: the compiler may assume a byte
/// written through the buffer pointer does not change the cursor, and keeps it in a
/// register, where a `Vec::push` per byte reloads and stores the length around every
/// byte. The `Vec`'s length is brought up to date when encoding ends.
struct AppendTo<'a> {
    vec: &'a mut Vec<u8>,
    /// `vec`'s buffer, valid for `cap` bytes.
    base: *mut u8,
    /// Bytes of the buffer initialized: `vec`'s own plus those written since.
    len: usize,
    /// `vec`'s capacity.
    cap: usize,
}

impl<'a> AppendTo<'a> {
    fn new(vec: &'a mut Vec<u8>) -> Self {
        vec.reserve(128);
        let (base, len, cap) = (vec.as_mut_ptr(), vec.len(), vec.capacity());
        AppendTo {
            vec,
            base,
            len,
            cap,
        }
    }

    /// Makes room for `additional` more bytes after the first `len` of `vec`, and returns
    /// the buffer and its capacity. Takes the fields, not `&mut self`: a flavor whose
    /// address escapes into a call, even a cold one, can no longer keep its cursor in a
    /// register.
    ///
    /// # Safety
    ///
    /// The first `len` bytes of `vec`'s buffer are initialized and `len <= capacity`.
    #[cold]
    #[inline(never)]
    unsafe fn grow(vec: &mut Vec<u8>, len: usize, additional: usize) -> (*mut u8, usize) {
        // SAFETY: the caller's promise.
        unsafe { vec.set_len(len) };
        vec.reserve(additional);
        (vec.as_mut_ptr(), vec.capacity())
    }
}

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.len == self.cap {
            // SAFETY: the first `len` bytes are initialized (`vec`'s own, and each byte
            // written since went to `len` before `len` grew past it), and `len <= cap`.
            let (base, cap) = unsafe { Self::grow(self.vec, self.len, 1) };
            (self.base, self.cap) = (base, cap);
        }
        // SAFETY: `len < cap`, so `base + len` lies inside the buffer `vec` allocated
        // (`base` and `cap` are refreshed by every `grow`), and nothing else refers to
        // the spare capacity while this flavor holds `vec` mutably borrowed.
        unsafe { self.base.add(self.len).write(data) };
        self.len += 1;
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.cap - self.len < data.len() {
            // SAFETY: as in `try_push`.
            let (base, cap) = unsafe { Self::grow(self.vec, self.len, data.len()) };
            (self.base, self.cap) = (base, cap);
        }
        // SAFETY: `len + data.len() <= cap`, so the destination lies inside `vec`'s
        // buffer; `data` is a shared borrow, which cannot overlap the spare capacity of a
        // `Vec` borrowed mutably here.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(self.len), data.len())
        };
        self.len += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        // SAFETY: as in `try_push`: the first `len <= cap` bytes are initialized.
        unsafe { self.vec.set_len(self.len) };
        Ok(())
    }
}

impl<T> Codec<T> {
    /// The encoding of an item in a new buffer.
    pub(crate) fn encode(&self, item: &T) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::new();
        (self.encode_into)(item, &mut buf)?;
        Ok(buf)
    }
}

thread_local! {
    /// Each producer thread's reusable encoding buffer (no allocation per enqueue).
    pub(crate) static ENCODE_BUF: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::Codec;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Item {
        id: u64,
        name: String,
        bytes: Vec<u8>,
        fixed: [u8; 32],
        signed: i32,
    }

    proptest! {
        /// The appending encoder writes exactly postcard's bytes after what the buffer
        /// already holds, across growths of the buffer (byte by byte and in slices).
        #[test]
        fn appends_postcards_bytes_after_the_existing_ones(
            before in proptest::collection::vec(any::<u8>(), 0..300),
            spare in 0usize..300,
            id in any::<u64>(),
            name in ".{0,200}",
            bytes in proptest::collection::vec(any::<u8>(), 0..1000),
            fixed in any::<[u8; 32]>(),
            signed in any::<i32>(),
        ) {
            let item = Item { id, name, bytes, fixed, signed };
            let codec = Codec::<Item>::postcard();
            let mut buf = Vec::with_capacity(before.len() + spare);
            buf.extend_from_slice(&before);
            (codec.encode_into)(&item, &mut buf).unwrap();
            let expected = postcard::to_allocvec(&item).unwrap();
            prop_assert_eq!(&buf[..before.len()], &before[..]);
            prop_assert_eq!(&buf[before.len()..], &expected[..]);
            prop_assert_eq!((codec.decode)(&buf[before.len()..]).unwrap(), item);
        }
    }
}
