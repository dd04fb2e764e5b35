//! `enqueue_at` through the queue, blocking and async: the position comes back from
//! `recovery()` after a restart, also once every item was delivered and its segment
//! deleted; a memory-only queue refuses it (it has nothing to resume from), and so does
//! every queue for a position longer than 255 bytes, handing the item back.

use std::time::Duration;

use vinequeue::{AsyncQueue, Config, EnqueueError, Error, NullSink, Queue};

fn config(dir: &std::path::Path) -> Config {
    Config::default()
        .wal_path(dir)
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
}

#[test]
fn the_position_of_the_last_item_comes_back_after_a_restart_even_once_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = Queue::new(config(dir.path()), NullSink).unwrap();
        queue.start().unwrap();
        for i in 0..50_000u64 {
            queue
                .enqueue_at(format!("line {i} {}", "x".repeat(40)), i.to_le_bytes())
                .unwrap();
        }
        queue.enqueue("no position".to_owned()).unwrap();
        queue.flush(Duration::from_secs(30)).unwrap();
        queue.stop().unwrap();
    }
    let queue = Queue::<String>::new(config(dir.path()), NullSink).unwrap();
    assert_eq!(queue.recovery().records, 0, "everything was delivered");
    assert_eq!(
        queue.recovery().source_position,
        Some(49_999u64.to_le_bytes().to_vec())
    );
}

#[test]
fn a_memory_queue_and_a_position_too_long_are_refused_with_the_item() {
    let memory = Queue::new(Config::default(), NullSink).unwrap();
    match memory.enqueue_at(7u32, b"p") {
        Err(EnqueueError::Failed(7, Error::Unsupported(why))) => {
            assert!(why.contains("wal_path"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let durable = Queue::new(config(dir.path()), NullSink).unwrap();
    match durable.enqueue_at(8u32, [0u8; 256]) {
        Err(EnqueueError::Failed(8, Error::Config(why))) => assert!(why.contains("256"), "{why}"),
        other => panic!("{other:?}"),
    }
    durable.enqueue_at(9u32, [0u8; 255]).unwrap();
}

#[test]
fn async_producers_store_their_position_too() {
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(async {
        let config = config(dir.path()).shutdown_timeout(Duration::from_millis(10));
        let (queue, batches): (AsyncQueue<u64>, _) = AsyncQueue::new(config).unwrap();
        for i in 0..1_000u64 {
            queue.enqueue_at(i, (i * 10).to_le_bytes()).await.unwrap();
        }
        queue.sync().await.unwrap();
        // Nobody takes the batches: the items stay in the log.
        let _ = queue.stop().await;
        drop(batches);
    });
    let queue = Queue::<u64>::new(config(dir.path()), NullSink).unwrap();
    assert_eq!(queue.recovery().records, 1_000);
    assert_eq!(
        queue.recovery().source_position,
        Some(9_990u64.to_le_bytes().to_vec())
    );
}
