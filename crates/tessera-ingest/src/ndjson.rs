//! The NDJSON fast path: one reader thread cuts the byte stream into blocks of whole
//! lines, parser threads turn blocks into Arrow batches in parallel, and the async side
//! takes them back in order. Memory is bounded by the blocks in flight, whatever the
//! size of the file.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use bytes_compat::StoreReader;
use flate2::read::MultiGzDecoder;
use serde_json::value::RawValue;
use tessera_core::batch::EventBatchBuilder;
use tessera_core::event::{EventError, ParseContext, parse_event};

use crate::error::RowError;
use crate::error::{ImportError, Result};
use crate::input::{Format, InputFile};
use crate::plan::{BLOCKED_CODE, TrackingPlan};
use crate::sink::{FileRun, Parsed};
use crate::{ImportOptions, ImportProgress};

/// Bytes per block handed to a parser.
const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// A single line longer than this is an error rather than a reason to buffer forever.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

struct Block {
    seq: u64,
    /// 1-based number of the first line in `data`.
    first_line: u64,
    data: Vec<u8>,
}

/// The source events of an import are recorded with, and its tracking plan.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub name: String,
    pub plan: Option<Arc<TrackingPlan>>,
}

impl Source {
    pub(crate) fn of(name: &str, options: &crate::ImportOptions) -> Source {
        Source {
            name: name.to_owned(),
            plan: options.plans.get(name).cloned(),
        }
    }
}

/// Gathers parse results into batches of at most `batch_rows` events.
struct Collector<'c> {
    out: Parsed,
    builder: EventBatchBuilder,
    batch_rows: usize,
    ctx: &'c ParseContext,
    source: &'c Source,
}

impl<'c> Collector<'c> {
    fn new(source: &'c Source, ctx: &'c ParseContext, batch_rows: usize) -> Self {
        Collector {
            out: Parsed::default(),
            builder: EventBatchBuilder::new(&source.name, batch_rows.min(8192)),
            batch_rows,
            ctx,
            source,
        }
    }

    /// Parses one event (row `row` of the input) and checks it against the tracking
    /// plan: a blocked event is a bad row (kept in `quarantine`), violations are counted.
    fn push(&mut self, text: &str, row: u64) {
        self.out.rows_read += 1;
        match parse_event(text, self.ctx) {
            Ok(event) => {
                if let Some(check) = self.source.plan.as_ref().and_then(|p| p.check(&event)) {
                    self.out
                        .violations
                        .add(self.ctx.received_at, &self.source.name, &check);
                    if check.blocked {
                        self.out.errors.push(RowError {
                            line: row,
                            code: BLOCKED_CODE,
                            reason: check.message(&self.source.name),
                            payload: Some(text.to_owned()),
                        });
                        return;
                    }
                }
                self.builder.append(&event);
                if self.builder.len() >= self.batch_rows {
                    self.out.batches.push(self.builder.finish());
                }
            }
            Err(e) => self
                .out
                .errors
                .push(RowError::new(row, &e, Some(text.to_owned()))),
        }
    }

    /// Counts row `row` as read and rejected.
    fn reject(&mut self, row: u64, error: &EventError, payload: Option<String>) {
        self.out.rows_read += 1;
        self.out.errors.push(RowError::new(row, error, payload));
    }

    fn finish(mut self) -> Parsed {
        if !self.builder.is_empty() {
            self.out.batches.push(self.builder.finish());
        }
        self.out
    }
}

/// Parses lines of Segment JSON into event batches; bad lines become [`RowError`]s.
pub(crate) fn parse_lines(
    data: &[u8],
    first_line: u64,
    source: &Source,
    ctx: &ParseContext,
    batch_rows: usize,
) -> Parsed {
    let mut collector = Collector::new(source, ctx, batch_rows);
    for (i, raw_line) in data.split(|b| *b == b'\n').enumerate() {
        let line_no = first_line + i as u64;
        let raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if raw_line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(raw_line) {
            Ok(text) => collector.push(text, line_no),
            Err(e) => collector.reject(
                line_no,
                &EventError::MalformedJson(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
                Some(String::from_utf8_lossy(raw_line).into_owned()),
            ),
        }
    }
    collector.finish()
}

/// Parses a JSON array of events (`[{...}, ...]`) or a Segment batch document
/// (`{"batch": [...]}`); element `i` is reported as row `i + 1`.
fn parse_document(
    data: &[u8],
    source: &Source,
    ctx: &ParseContext,
    batch_rows: usize,
) -> std::result::Result<Parsed, String> {
    #[derive(serde::Deserialize)]
    struct BatchDoc<'a> {
        #[serde(borrow)]
        batch: Vec<&'a RawValue>,
    }
    let text = std::str::from_utf8(data)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let elements: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(text).map_err(|e| e.to_string())?,
        _ => {
            serde_json::from_str::<BatchDoc<'_>>(text)
                .map_err(|e| e.to_string())?
                .batch
        }
    };
    let mut collector = Collector::new(source, ctx, batch_rows);
    for (i, el) in elements.iter().enumerate() {
        collector.push(el.get(), i as u64 + 1);
    }
    Ok(collector.finish())
}

/// Counts bytes as they are read from the source (before decompression).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open_reader(
    file: &InputFile,
    handle: tokio::runtime::Handle,
    count: Arc<AtomicU64>,
) -> std::io::Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = match file.url.scheme() {
        "file" => {
            let path = file
                .url
                .to_file_path()
                .map_err(|_| std::io::Error::other("not a local path"))?;
            Box::new(std::fs::File::open(path)?)
        }
        _ => Box::new(StoreReader::new(
            file.store.clone(),
            file.path.clone(),
            handle,
        )),
    };
    let counted = BufReader::with_capacity(1 << 20, Counting { inner: raw, count });
    Ok(if file.gzip() {
        Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(counted),
        ))
    } else {
        Box::new(counted)
    })
}

/// Reads from `reader` until `buf` holds `want` bytes; returns whether the input ended.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    while buf.len() < want {
        let start = buf.len();
        buf.resize(want, 0);
        let n = reader.read(&mut buf[start..])?;
        buf.truncate(start + n);
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads `reader` into blocks of whole lines.
fn read_blocks(mut reader: Box<dyn Read + Send>, tx: SyncSender<Block>) -> std::io::Result<()> {
    let mut seq = 0;
    let mut line = 1u64;
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK_BYTES * 2);
    let mut want = BLOCK_BYTES;
    loop {
        let eof = fill(reader.as_mut(), &mut buf, want)?;
        let cut = if eof {
            buf.len()
        } else {
            match memrchr_newline(&buf) {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE_BYTES => {
                    return Err(std::io::Error::other(format!(
                        "line {line} is longer than {} MB",
                        MAX_LINE_BYTES >> 20
                    )));
                }
                // One line longer than a block: read more of it.
                None => {
                    want = buf.len() + BLOCK_BYTES;
                    continue;
                }
            }
        };
        want = BLOCK_BYTES;
        if cut > 0 {
            let rest = buf.split_off(cut);
            let data = std::mem::replace(&mut buf, rest);
            let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
            let block = Block {
                seq,
                first_line: line,
                data,
            };
            if tx.send(block).is_err() {
                return Ok(()); // the consumer stopped
            }
            seq += 1;
            line += lines;
        }
        if eof {
            return Ok(());
        }
    }
}

fn memrchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().rposition(|b| *b == b'\n')
}

/// Imports one NDJSON (or JSON document) file.
pub(crate) async fn import_file(
    file: &InputFile,
    format: Format,
    options: &ImportOptions,
    run: &mut FileRun,
    progress: &dyn ImportProgress,
) -> Result<()> {
    let ctx =
        ParseContext::import(chrono::Utc::now().timestamp_micros()).with_window(options.window);
    let count = Arc::new(AtomicU64::new(0));
    let reader = open_reader(file, tokio::runtime::Handle::current(), count.clone())
        .map_err(|e| input_error(&file.location(), e))?;
    let source = Source::of(&run.source, options);
    let batch_rows = options.batch_rows;

    // A JSON document (array or {"batch": [...]}) is read and parsed whole, off the
    // async runtime (reading an object store blocks on it).
    if format == Format::Json {
        let location = file.location();
        let parsed = tokio::task::spawn_blocking(move || {
            let mut data = Vec::new();
            let mut reader = reader;
            reader
                .read_to_end(&mut data)
                .map_err(|e| input_error(&location, e))?;
            let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
            if first == Some(b'[') || (first == Some(b'{') && looks_like_batch(&data)) {
                parse_document(&data, &source, &ctx, batch_rows).map_err(|message| {
                    input_error(&location, format!("not a JSON array of events: {message}"))
                })
            } else {
                Ok(parse_lines(&data, 1, &source, &ctx, batch_rows))
            }
        })
        .await
        .map_err(|e| ImportError::worker("the NDJSON parser", e))??;
        progress.bytes(count.load(Ordering::Relaxed));
        return run.accept(parsed).await;
    }

    let threads = options
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let (block_tx, block_rx) = sync_channel::<Block>(threads * 2);
    let block_rx: Arc<Mutex<Receiver<Block>>> = Arc::new(Mutex::new(block_rx));
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u64, Parsed)>(threads * 2);

    let reader_task = tokio::task::spawn_blocking(move || read_blocks(reader, block_tx));
    for _ in 0..threads {
        let rx = block_rx.clone();
        let tx = out_tx.clone();
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let block = match rx.lock() {
                    Ok(guard) => match guard.recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    },
                    Err(_) => return,
                };
                let parsed = parse_lines(&block.data, block.first_line, &source, &ctx, batch_rows);
                if tx.blocking_send((block.seq, parsed)).is_err() {
                    return;
                }
            }
        });
    }
    drop(out_tx);

    let mut pending: BTreeMap<u64, Parsed> = BTreeMap::new();
    let mut next = 0u64;
    while let Some((seq, parsed)) = out_rx.recv().await {
        pending.insert(seq, parsed);
        while let Some(p) = pending.remove(&next) {
            run.accept(p).await?;
            next += 1;
        }
        progress.bytes(count.load(Ordering::Relaxed));
    }
    reader_task
        .await
        .map_err(|e| ImportError::worker("the NDJSON parser", e))?
        .map_err(|e| input_error(&file.location(), e))?;
    debug_assert!(pending.is_empty());
    Ok(())
}

fn input_error(location: &str, message: impl ToString) -> ImportError {
    ImportError::Input {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

fn looks_like_batch(data: &[u8]) -> bool {
    let head = &data[..data.len().min(256)];
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start().trim_start_matches('{').trim_start();
    t.starts_with("\"batch\"")
}

mod bytes_compat {
    //! A blocking `Read` over an object-store object, for the reader thread.

    use std::io::Read;
    use std::sync::Arc;

    use futures::StreamExt;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    pub(super) struct StoreReader {
        store: Arc<dyn ObjectStore>,
        path: Path,
        handle: tokio::runtime::Handle,
        stream: Option<futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>>,
        current: bytes::Bytes,
    }

    impl StoreReader {
        pub(super) fn new(
            store: Arc<dyn ObjectStore>,
            path: Path,
            handle: tokio::runtime::Handle,
        ) -> Self {
            StoreReader {
                store,
                path,
                handle,
                stream: None,
                current: bytes::Bytes::new(),
            }
        }
    }

    impl Read for StoreReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.current.is_empty() {
                if self.stream.is_none() {
                    let store = self.store.clone();
                    let path = self.path.clone();
                    let got = self
                        .handle
                        .block_on(async move { store.get(&path).await })
                        .map_err(std::io::Error::other)?;
                    self.stream = Some(got.into_stream());
                }
                let stream = self.stream.as_mut().expect("stream set above");
                match self.handle.block_on(stream.next()) {
                    Some(Ok(bytes)) => self.current = bytes,
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.current.len());
            buf[..n].copy_from_slice(&self.current[..n]);
            self.current = self.current.slice(n..);
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks_of(input: Vec<u8>) -> Vec<Block> {
        let (tx, rx) = sync_channel(1024);
        read_blocks(Box::new(std::io::Cursor::new(input)), tx).unwrap();
        rx.into_iter().collect()
    }

    #[test]
    fn blocks_hold_whole_lines_and_lose_nothing() {
        // Lines of every size around the block size, the last one without a newline and
        // longer than a block.
        let mut input = Vec::new();
        let mut lines = Vec::new();
        for (i, len) in [
            10,
            BLOCK_BYTES - 3,
            5,
            BLOCK_BYTES + 7,
            1,
            BLOCK_BYTES * 2 + 1,
        ]
        .into_iter()
        .enumerate()
        {
            let line = vec![b'a' + i as u8; len];
            input.extend_from_slice(&line);
            lines.push(line);
            if i < 5 {
                input.push(b'\n');
            }
        }
        let blocks = blocks_of(input.clone());
        let joined: Vec<u8> = blocks.iter().flat_map(|b| b.data.clone()).collect();
        assert_eq!(joined, input);
        let mut next_line = 1;
        for (seq, b) in blocks.iter().enumerate() {
            assert_eq!(b.seq, seq as u64);
            assert_eq!(b.first_line, next_line);
            assert!(b.data.ends_with(b"\n") || seq == blocks.len() - 1);
            next_line += b.data.iter().filter(|c| **c == b'\n').count() as u64;
        }
        assert_eq!(blocks.last().unwrap().data, lines[5]);
    }

    #[test]
    fn empty_input_gives_no_block() {
        assert!(blocks_of(Vec::new()).is_empty());
    }
}
