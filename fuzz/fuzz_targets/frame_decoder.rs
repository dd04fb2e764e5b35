//! Arbitrary bytes through the segment-header, frame and checkpoint decoders: no panic, no
//! allocation in `decode_frame`, and every `Record` verdict lies inside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinequeue_fuzz::harness::{check_frame_decoder, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| check_frame_decoder(data));
