//! Tessera's activation: segments sent to the systems where marketing happens.
//!
//! `[destinations.NAME]` says where (`kind = "webhook"`: Segment-compatible signed
//! batches; `kind = "file"`: Parquet or CSV files in an object store, see [`file`]);
//! `[syncs.NAME]` which segment goes there, how (`diff`, `mirror`, `full`) and with
//! which traits (`fields`, an SQL query). A sync run is
//!
//! 1. **planned** ([`plan`]): the changes since the last planned refresh version (the
//!    whole membership the first time), consent applied, cut into batches and written to
//!    the `activation_batches` ledger in one commit (one per run, by Delta transaction)
//!    before anything is sent;
//! 2. **delivered** ([`deliver`]): each destination by a worker of its own, at least
//!    once, with stable delivery ids, retries with backoff and `Retry-After`, and dead
//!    letters; a crash resumes from the ledger without re-planning.
//!
//!
//! `kind = "event_stream"` destinations take no sync: they forward collected events as
//! they are committed ([`stream`]), through the same delivery workers.
//!
//! [`Activation`] is the front door of `tessera activate` and of `tessera serve`, which
//! plans after each refresh and keeps delivering in the background.
//!
//! This crate is the HTTP *client* of destinations (reqwest) and the writer of file
//! destinations (object_store); it serves nothing.

pub mod ads;
pub mod deliver;
pub mod destination;
pub mod fields;
pub mod file;
pub mod ledger;
pub mod member;
pub mod plan;
pub mod stream;
pub mod webhook;

mod error;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::config::{Project, SyncSection};
use tessera_core::schema::ACTIVATION_BATCHES;
use tessera_engine::Engine;

/// `f` of every task on one thread per core (at most), each thread taking the next task
/// when it is done with one; results in task order (a panic in a task is resumed on the
/// caller's thread). For a few large tasks — the column chunks of a Parquet file, the
/// chunks of a members document, ranges of message ids.
pub(crate) fn in_parallel<T: Send, U: Send>(tasks: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(tasks.len());
    if threads <= 1 {
        return tasks.into_iter().map(f).collect();
    }
    let count = tasks.len();
    let queue = std::sync::Mutex::new(tasks.into_iter().enumerate());
    let done: Vec<std::sync::Mutex<Option<U>>> =
        (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let next = queue.lock().map(|mut q| q.next());
                        let Ok(Some((i, task))) = next else { break };
                        let result = f(task);
                        if let Ok(mut slot) = done[i].lock() {
                            *slot = Some(result);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
    // Every task ran: a panic would have been resumed above.
    done.into_iter()
        .filter_map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

pub use deliver::{Deliver, Delivered};
pub use destination::Destination;
pub use error::{ActivateError, Result};
pub use ledger::{BatchState, LedgerWriter, Status};
pub use plan::Plan;

/// Delta application id of a sync's planned runs.
fn plan_app(sync: &str) -> String {
    format!("tessera-activate-{sync}")
}

/// What planning a sync came to.
#[derive(Debug)]
pub struct Planned {
    pub sync: String,
    /// The run planned (`None`: the segment has no newer refresh).
    pub plan: Option<Plan>,
    /// Whether this call wrote it (another planner may have been first).
    pub written: bool,
}

/// A sync's state, from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub sync: String,
    pub destination: String,
    pub segment: String,
    /// The latest planned run and the refresh version it reaches.
    pub run: i64,
    pub to_version: i64,
    pub planned: u64,
    pub retrying: u64,
    pub delivered: u64,
    pub dead: u64,
    pub held: u64,
    /// Members in delivered batches.
    pub members_delivered: u64,
    /// Members left out for want of consent.
    pub skipped: u64,
    /// The latest recorded attempt (microseconds since the epoch).
    pub last_attempt_at: Option<i64>,
    /// The latest failure (of a batch still retrying or dead): code and message.
    pub last_error: Option<String>,
}

/// The destinations and syncs of a project, ready to plan and deliver.
pub struct Activation {
    destinations: BTreeMap<String, Destination>,
    syncs: BTreeMap<String, SyncSection>,
    client: reqwest::Client,
    ledger: Arc<LedgerWriter>,
    actor: String,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field(
                "destinations",
                &self.destinations.keys().collect::<Vec<_>>(),
            )
            .field("syncs", &self.syncs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Activation {
    /// The destinations and syncs of `project`, secrets read through `env`; `actor` is
    /// recorded with every commit.
    pub fn new(
        engine: &Engine,
        project: &Project,
        env: &dyn Fn(&str) -> Option<String>,
        actor: &str,
    ) -> Result<Activation> {
        let config = &project.config;
        let mut destinations = BTreeMap::new();
        for (name, section) in &config.destinations {
            destinations.insert(
                name.clone(),
                Destination::new(name, section, env, &project.dir)?,
            );
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()
            .map_err(ActivateError::Client)?;
        Ok(Activation {
            destinations,
            syncs: config.syncs.clone(),
            client,
            ledger: LedgerWriter::new(engine.lake().clone()),
            actor: actor.to_owned(),
        })
    }

    /// Whether the project has nothing to activate: no sync and no event stream.
    pub fn is_empty(&self) -> bool {
        self.syncs.is_empty()
            && !self
                .destinations
                .values()
                .any(|d| d.kind == tessera_core::config::DestinationKind::EventStream)
    }

    pub fn syncs(&self) -> &BTreeMap<String, SyncSection> {
        &self.syncs
    }

    pub fn ledger(&self) -> &Arc<LedgerWriter> {
        &self.ledger
    }

    fn sync(&self, name: &str) -> Result<&SyncSection> {
        self.syncs
            .get(name)
            .ok_or_else(|| ActivateError::UnknownSync {
                name: name.to_owned(),
                known: if self.syncs.is_empty() {
                    "none (add [syncs.NAME] to tessera.toml)".into()
                } else {
                    self.syncs.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }

    fn destination_of(&self, sync: &SyncSection) -> Result<&Destination> {
        // Validated with the configuration: every sync names a destination.
        self.destinations
            .get(&sync.destination)
            .ok_or_else(|| ActivateError::UnknownSync {
                name: sync.destination.clone(),
                known: self
                    .destinations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Chosen syncs (`names` empty: all; `scheduled`: only those run after refreshes).
    fn chosen(&self, names: &[String], scheduled: bool) -> Result<Vec<&String>> {
        for n in names {
            self.sync(n)?;
        }
        Ok(self
            .syncs
            .iter()
            .filter(|(n, s)| (names.is_empty() || names.contains(n)) && (!scheduled || s.schedule))
            .map(|(n, _)| n)
            .collect())
    }

    /// The next run of `name`, without writing anything.
    pub async fn preview(&self, engine: &Engine, name: &str) -> Result<Option<Plan>> {
        let sync = self.sync(name)?;
        let cursors = ledger::read_cursors(engine).await?;
        let destination = self.destination_of(sync)?;
        let sent = self
            .sent(engine, name, destination, cursors.get(name).copied())
            .await?;
        plan::plan(
            engine,
            name,
            sync,
            destination,
            cursors.get(name).copied(),
            &sent,
        )
        .await
    }

    /// For an ad platform: the identifiers last added for each profile of `sync` (what
    /// an exit removes), from the ledger. Read only when there is a run to plan: the
    /// segment has a refresh newer than `last` (`(run, to_version)` planned last).
    async fn sent(
        &self,
        engine: &Engine,
        sync: &str,
        destination: &Destination,
        last: Option<(i64, i64)>,
    ) -> Result<std::collections::HashMap<String, ads::Identifiers>> {
        let mut out = std::collections::HashMap::new();
        if destination.platform.is_none() {
            return Ok(out);
        }
        let segment = &self.sync(sync)?.segment;
        let newer = tessera_segments::audience::latest_version(engine, segment)
            .await?
            .is_some_and(|v| v > last.map_or(0, |(_, to)| to));
        if !newer {
            return Ok(out);
        }
        // Batches come in (sync, run, seq) order: later additions win.
        for b in ledger::read(engine, Some(&destination.name)).await? {
            if b.sync != sync || b.status == Status::Dead {
                continue;
            }
            for m in b.members {
                if let (plan::Change::Entered, Some(ids)) = (m.change, m.identifiers) {
                    out.insert(m.profile_id, *ids);
                }
            }
        }
        Ok(out)
    }

    /// Plans the next run of each chosen sync whose segment has a newer refresh, and
    /// writes it to the ledger. A segment never refreshed is an error for a sync named
    /// explicitly, and skipped otherwise.
    pub async fn plan(
        &self,
        engine: &Engine,
        names: &[String],
        scheduled: bool,
    ) -> Result<Vec<Planned>> {
        engine.lake().create_missing_tables().await?;
        let cursors = ledger::read_cursors(engine).await?;
        let mut out = Vec::new();
        for name in self.chosen(names, scheduled)? {
            let sync = self.sync(name)?;
            let destination = self.destination_of(sync)?;
            let sent = self
                .sent(
                    engine,
                    name,
                    destination,
                    cursors.get(name.as_str()).copied(),
                )
                .await?;
            let plan = match plan::plan(
                engine,
                name,
                sync,
                destination,
                cursors.get(name.as_str()).copied(),
                &sent,
            )
            .await
            {
                Ok(p) => p,
                Err(ActivateError::NotRefreshed { .. }) if names.is_empty() => None,
                Err(e) => return Err(e),
            };
            let mut written = false;
            if let Some(p) = &plan {
                written = ledger::append(
                    engine.lake(),
                    &p.rows(),
                    "activation plan",
                    &self.actor,
                    Some((&plan_app(name), p.run)),
                )
                .await?;
            }
            out.push(Planned {
                sync: name.clone(),
                plan,
                written,
            });
        }
        Ok(out)
    }

    /// Delivers what is due at every destination, each by a worker of its own, waiting
    /// for retries due within `wait`.
    pub async fn deliver(&self, engine: &Engine, wait: Duration) -> Result<Vec<Delivered>> {
        let workers = self
            .destinations
            .values()
            .map(|d| self.deliver_to(engine, d, wait));
        futures::future::join_all(workers)
            .await
            .into_iter()
            .collect()
    }

    /// Delivers what is due at destination `d`.
    pub async fn deliver_to(
        &self,
        engine: &Engine,
        d: &Destination,
        wait: Duration,
    ) -> Result<Delivered> {
        if d.kind == tessera_core::config::DestinationKind::EventStream {
            return stream::deliver(engine, d, &self.client, &self.actor, wait).await;
        }
        deliver::deliver(
            engine,
            d,
            &self.syncs,
            &self.ledger,
            &self.client,
            Deliver { wait },
        )
        .await
    }

    /// The destinations, by name.
    pub fn destinations(&self) -> &BTreeMap<String, Destination> {
        &self.destinations
    }

    /// Releases the held runs of `sync` (a mirror that shrank too much): they are sent
    /// at the next delivery. Returns how many batches.
    pub async fn confirm(&self, engine: &Engine, sync: &str) -> Result<usize> {
        self.sync(sync)?;
        self.redrive(engine, sync, Status::Held, "activation confirm", None)
            .await
    }

    /// Re-drives the dead batches of `sync` (all syncs when `None`) with their members'
    /// *current* state: a change that later changes superseded (an entry of a profile
    /// that has left the segment since, or an exit of one that is back) is dropped, the
    /// rest planned again and sent with current traits. Returns how many batches.
    pub async fn retry(&self, engine: &Engine, sync: Option<&str>) -> Result<usize> {
        let names: Vec<String> = match sync {
            Some(s) => {
                self.sync(s)?;
                vec![s.to_owned()]
            }
            None => self.syncs.keys().cloned().collect(),
        };
        let mut n = 0;
        for s in names {
            n += self
                .redrive(engine, &s, Status::Dead, "activation retry", None)
                .await?;
        }
        Ok(n)
    }

    /// Sends a delivered run of `sync` again exactly as it was planned (the same batch
    /// ids, members and `messageId`s; traits as they are now): the latest delivered run,
    /// or `run`. A file destination rewrites the same objects. Returns how many batches.
    pub async fn resend(&self, engine: &Engine, sync: &str, run: Option<i64>) -> Result<usize> {
        self.sync(sync)?;
        let run = match run {
            Some(r) => r,
            None => {
                let latest = ledger::read(engine, None)
                    .await?
                    .into_iter()
                    .filter(|b| b.sync == sync && b.status == Status::Delivered)
                    .map(|b| b.run)
                    .max();
                match latest {
                    Some(r) => r,
                    None => return Ok(0),
                }
            }
        };
        self.redrive(
            engine,
            sync,
            Status::Delivered,
            "activation resend",
            Some(run),
        )
        .await
    }

    async fn redrive(
        &self,
        engine: &Engine,
        sync: &str,
        from: Status,
        operation: &str,
        run: Option<i64>,
    ) -> Result<usize> {
        let batches: Vec<BatchState> = ledger::read(engine, None)
            .await?
            .into_iter()
            .filter(|b| b.sync == sync && b.status == from && run.is_none_or(|r| b.run == r))
            .collect();
        if batches.is_empty() {
            return Ok(0);
        }
        let current: std::collections::HashSet<String> = if from == Status::Dead {
            let segment = &self.sync(sync)?.segment;
            tessera_segments::audience::members(engine, segment, usize::MAX)
                .await?
                .into_iter()
                .map(|m| m.profile_id)
                .collect()
        } else {
            Default::default()
        };
        let rows: Vec<_> = batches
            .into_iter()
            .map(|mut b| {
                if from == Status::Dead {
                    b.members.retain(|m| match m.change {
                        plan::Change::Entered => current.contains(&m.profile_id),
                        plan::Change::Exited => !current.contains(&m.profile_id),
                    });
                }
                if b.members.is_empty() {
                    b.row(
                        Status::Delivered,
                        b.attempt,
                        None,
                        Some(
                            "superseded: every change of the batch was overtaken by later ones"
                                .into(),
                        ),
                        None,
                    )
                } else {
                    b.row(
                        Status::Planned,
                        b.attempt,
                        None,
                        Some(operation.into()),
                        None,
                    )
                }
            })
            .collect();
        ledger::append(engine.lake(), &rows, operation, &self.actor, None).await?;
        Ok(rows.len())
    }
}

/// The state of every sync in the ledger.
pub async fn status(engine: &Engine) -> Result<Vec<SyncStatus>> {
    let mut out: BTreeMap<String, SyncStatus> = BTreeMap::new();
    let mut last_failure: std::collections::HashMap<String, i64> = Default::default();
    let batches = if engine.lake().exists(ACTIVATION_BATCHES).await? {
        ledger::read(engine, None).await?
    } else {
        Vec::new()
    };
    for b in batches {
        let s = out.entry(b.sync.clone()).or_insert_with(|| SyncStatus {
            sync: b.sync.clone(),
            destination: b.destination.clone(),
            segment: b.segment.clone(),
            ..SyncStatus::default()
        });
        if b.run >= s.run {
            s.run = b.run;
            s.to_version = b.to_version;
        }
        s.skipped += b.skipped as u64;
        match b.status {
            Status::Planned => s.planned += 1,
            Status::Retry => s.retrying += 1,
            Status::Delivered => {
                s.delivered += 1;
                s.members_delivered += b.members.len() as u64;
            }
            Status::Dead => s.dead += 1,
            Status::Held => s.held += 1,
        }
        if b.attempt > 0 && s.last_attempt_at.is_none_or(|t| b.updated_at > t) {
            s.last_attempt_at = Some(b.updated_at);
        }
        if matches!(b.status, Status::Retry | Status::Dead)
            && last_failure.get(&b.sync).is_none_or(|t| b.updated_at > *t)
        {
            last_failure.insert(b.sync.clone(), b.updated_at);
            s.last_error = Some(format!(
                "{}{}",
                b.code.map_or_else(String::new, |c| format!("{c} ")),
                b.message.clone().unwrap_or_default()
            ));
        }
    }
    let mut all: Vec<SyncStatus> = out.into_values().collect();
    all.extend(stream::status(engine).await?);
    Ok(all)
}
