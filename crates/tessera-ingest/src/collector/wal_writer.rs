//! The write-ahead log's writer thread: group commits (one fsync for the records of
//! many requests), releases after a flush, and the Arrow IPC encoding of records (of
//! accepted events, of refused events marked [`QUARANTINE_RECORD`] and of tracking-plan
//! violation counts marked [`VIOLATIONS_RECORD`]).

use super::*;

/// A request for the WAL writer: payload, the batch it encodes (buffered for the
/// flusher once durable), and where to say it is durable.
pub(super) struct WalWrite {
    pub(super) payload: Vec<u8>,
    pub(super) record: (Record, RecordBatch),
    pub(super) done: oneshot::Sender<Result<u64, String>>,
}

pub(super) enum WalCommand {
    Write(WalWrite),
    Release(u64),
}

pub(super) fn encode(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// The first byte of a record of refused events (`quarantine` rows); records of
/// accepted events are bare Arrow IPC streams, which start with `0xFF`.
pub(super) const QUARANTINE_RECORD: &[u8] = b"Q";

/// The first byte of a record of tracking-plan violation counts (`plan_violations`).
pub(super) const VIOLATIONS_RECORD: &[u8] = b"V";

pub(super) fn decode(bytes: &[u8]) -> Result<RecordBatch, arrow::error::ArrowError> {
    decode_as(bytes, &schema::events_schema())
}

pub(super) fn decode_as(
    bytes: &[u8],
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let reader = StreamReader::try_new(bytes, None)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b?);
    }
    arrow::compute::concat_batches(schema, &batches)
}

/// The WAL writer thread: takes every waiting write, appends them with one fsync,
/// answers each; releases segments the lake holds.
pub(super) fn wal_writer(
    mut wal: Wal,
    mut rx: mpsc::UnboundedReceiver<WalCommand>,
    weak: std::sync::Weak<Collector>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut writes = Vec::new();
        let mut release = None;
        let mut take = |cmd| match cmd {
            WalCommand::Write(w) => writes.push(w),
            WalCommand::Release(s) => release = Some(s),
        };
        take(first);
        while let Ok(cmd) = rx.try_recv() {
            take(cmd);
        }
        let collector = weak.upgrade();
        if !writes.is_empty() {
            let payloads: Vec<&[u8]> = writes.iter().map(|w| w.payload.as_slice()).collect();
            let result = wal.append(&payloads);
            if let Some(c) = &collector {
                c.metrics.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
                c.metrics.wal_bytes.store(wal.bytes(), Ordering::Relaxed);
                c.wal_written(result.as_ref().err().map(ToString::to_string));
            }
            match result {
                Ok(first_seq) => {
                    // Buffered here, in sequence order, before anyone is told: the
                    // flusher never sees a sequence without every one below it (a
                    // commit's transaction covers all records up to it).
                    let mut buffer = collector.as_ref().and_then(|c| c.buffer.lock().ok());
                    let mut answers = Vec::with_capacity(writes.len());
                    for (i, w) in writes.into_iter().enumerate() {
                        let seq = first_seq + i as u64;
                        if let Some(b) = buffer.as_mut() {
                            let (kind, batch) = w.record;
                            b.push(kind, seq, batch);
                        }
                        answers.push((w.done, seq));
                    }
                    if let (Some(c), Some(b)) = (&collector, &buffer) {
                        c.metrics
                            .buffered_events
                            .store(b.events as u64, Ordering::Relaxed);
                    }
                    drop(buffer);
                    for (done, seq) in answers {
                        let _ = done.send(Ok(seq));
                    }
                }
                Err(e) => {
                    for w in writes {
                        let _ = w.done.send(Err(e.to_string()));
                    }
                }
            }
        }
        if let Some(seq) = release {
            if let Err(e) = wal.release_through(seq) {
                tracing::error!("releasing the write-ahead log: {e}");
            }
            if let Some(c) = &collector {
                c.metrics.wal_bytes.store(wal.bytes(), Ordering::Relaxed);
            }
        }
    }
}
