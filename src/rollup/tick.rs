//! The commands of an incremental run of the hourly period: the events written since the
//! previous run, by their `_id`s, added to what is kept, instead of whole windows read again.
//!
//! What is kept, and why each piece can be written again at any time without harm:
//! - **Partials**: for each minute of write time (a *slice*, by the `_id`'s timestamp) and each
//!   15-minute bucket of event time, the counts and sums `rollup_counts.json` and
//!   `rollup_values.json` compute, keyed `{r: slice, w: bucket, p}`. A slice is computed whole,
//!   only once it has settled (`late_events.settle` after its end), and replaces what was kept
//!   under its key: a repeat, a retry or a stale leader writes the same numbers again.
//! - **User sets**: each hourly window's distinct users as the field names of a few documents
//!   (split by the last character of the user's key), merged with `whenMatched: "merge"`. A
//!   union only grows with true members, so replays and stale writes cannot spoil it.
//! - The **finish** sums a window's partials of settled slices, counts its user sets, adds the
//!   events written since the last settled slice (read from the audit log, a minute or so of
//!   writes) and writes the window whole through `rollup_finish.json`, fenced like any run.
//!
//! Every UTC offset is a multiple of 15 minutes, so a bucket lies in exactly one hourly window
//! in every zone, and hourly windows are one hour long everywhere. Pure: no I/O, no clock.

use bson::{doc, Bson, Document};
use chrono::{DateTime, TimeZone, Utc};

use super::commands::{AggregateCommand, Target, UpdateCommand};
use super::late_scan::object_id_at;
use super::pipeline::{
    date, seed_command, start_of_quantum, Bindings, COUNTS_PIPELINE, FINISH_PIPELINE,
    VALUES_PIPELINE,
};
use crate::pipeline_files::{stages, PipelineError};
use crate::window::{Period, Window};

/// `pipelines/user_set.json`: the distinct users of the hourly windows of the events given, as
/// field names of one document per window and split.
pub const USER_SET_PIPELINE: &str = include_str!("../../pipelines/user_set.json");
/// `pipelines/partial_windows.json`: the windows' partials and user-set sizes, shaped as the
/// finish reads the scans' staged documents.
pub const PARTIAL_WINDOWS_PIPELINE: &str = include_str!("../../pipelines/partial_windows.json");

/// The only period kept incrementally: its windows are one hour everywhere, so a window's users
/// fit a handful of documents and an event's window is plain arithmetic.
pub const PERIOD: Period = Period::Hourly;
/// A slice: the write-time unit that is computed whole and kept under its own key.
pub const SLICE_MS: i64 = 60_000;
/// A bucket: the event-time unit partials are kept per; it lies in one window of every period.
pub const BUCKET_MS: i64 = 900_000;

/// The far end of the event-time range the tick's scans match: events stamped in the future are
/// kept too, for the window they will fall in.
fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t` without its fraction of a second: the `_id` ranges of reads end on whole seconds.
pub fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The start of the slice holding `t`.
pub fn slice_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(SLICE_MS)).unwrap_or(t)
}

/// The starts of the slices of `[since, until)` (both slice starts), oldest first.
pub fn slices(since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let step = chrono::Duration::milliseconds(SLICE_MS);
    std::iter::successors(Some(slice_start(since)), |s| Some(*s + step))
        .take_while(|s| *s < until)
        .collect()
}

/// The 15-minute buckets of a window, oldest first.
pub fn buckets_of(window: &Window) -> Vec<DateTime<Utc>> {
    let step = chrono::Duration::milliseconds(BUCKET_MS);
    std::iter::successors(Some(window.start), |b| Some(*b + step))
        .take_while(|b| *b < window.end)
        .collect()
}

/// The first stages of a read of the events written in `[from, to)`: their `_id` range, then a
/// `$limit` no range of writes reaches, so that the scan's own `$match` on `timestamp` (after it)
/// filters what the range holds instead of joining the index lookup. Without it, DocumentDB
/// 0.108 intersected the `_id` range with the `timestamp` index over the scan's whole event range
/// (the open hour and all later time), so reading a minute of writes cost more as the hour filled:
/// 30,000 events of one minute took 0.10 s through both indexes, 0.04 s through `_id` alone,
/// 150,000 events into the hour (a tail scan: 0.17 against 0.055 s). MongoDB does not move a
/// `$match` before a `$limit` either, so the plan is the same there: the `_id` range alone.
pub fn written_in(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Vec<Document> {
    let mut range = Document::new();
    if let Some(from) = from {
        range.insert("$gte", object_id_at(from));
    }
    if let Some(to) = to {
        range.insert("$lt", object_id_at(to));
    }
    vec![doc! {"$match": {"_id": range}}, doc! {"$limit": READ_LIMIT}]
}

/// The `$limit` of [`written_in`]: far above any audit log (2^50 events).
pub const READ_LIMIT: i64 = 1 << 50;

/// Where the scans of one slice go and what they count.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceCommands {
    pub slice: DateTime<Utc>,
    /// `rollup_counts.json` over the slice's events, one partial per bucket.
    pub counts: AggregateCommand,
    /// `rollup_values.json` over the slice's events, one partial per bucket.
    pub values: AggregateCommand,
}

/// The scans of the slice starting at `slice`: the events whose `_id` was made in that minute
/// and whose `timestamp` is at or after `origin` (older ones are late events for the periods'
/// regular runs), into one partial per bucket, replacing what was kept under the same key.
pub fn slice_commands(
    target: &Target<'_>,
    origin: DateTime<Utc>,
    slice: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<SliceCommands, PipelineError> {
    let end = slice + chrono::Duration::milliseconds(SLICE_MS);
    let written = written_in(Some(slice), Some(end));
    let bindings = [
        ("from", date(origin)),
        ("to", date(far_future())),
        ("windowOfEvent", start_of_quantum(origin, BUCKET_MS)),
        ("run", date(slice)),
        ("now", date(now)),
    ];
    let keep = doc! {"$merge": {
        "into": target.partials_collection,
        "on": "_id",
        "whenMatched": "replace",
        "whenNotMatched": "insert",
    }};
    let scan = |file: &'static str, text: &str| -> Result<AggregateCommand, PipelineError> {
        let mut pipeline = written.clone();
        pipeline.extend(stages(file, text, &bindings)?);
        pipeline.push(keep.clone());
        Ok(target.aggregate(target.audit_collection, pipeline))
    };
    Ok(SliceCommands {
        slice,
        counts: scan("pipelines/rollup_counts.json", COUNTS_PIPELINE)?,
        values: scan("pipelines/rollup_values.json", VALUES_PIPELINE)?,
    })
}

/// Merges the users of the events written in `[from, to)` into the sets of their hourly windows
/// at or after `origin` (a user set only takes true members, so a range read twice, unsettled
/// or by a stale leader, does no harm).
pub fn user_set_command(
    target: &Target<'_>,
    origin: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<AggregateCommand, PipelineError> {
    let mut pipeline = written_in(Some(from), Some(to));
    pipeline.extend(stages(
        "pipelines/user_set.json",
        USER_SET_PIPELINE,
        &[
            ("from", date(origin)),
            ("to", date(far_future())),
            ("windowOfEvent", start_of_quantum(origin, 3_600_000)),
            ("period", Bson::String(PERIOD.as_str().to_owned())),
            ("now", date(now)),
        ],
    )?);
    pipeline.push(doc! {"$merge": {
        "into": target.user_sets_collection,
        "on": "_id",
        "whenMatched": "merge",
        "whenNotMatched": "insert",
    }});
    Ok(target.aggregate(target.audit_collection, pipeline))
}

/// How many events were written in `[from, to)`: one document `{n}`, or none for zero.
pub fn written_count_command(
    target: &Target<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AggregateCommand {
    target.aggregate(
        target.audit_collection,
        vec![
            doc! {"$match": {"_id": {"$gte": object_id_at(from), "$lt": object_id_at(to)}}},
            doc! {"$count": "n"},
        ],
    )
}

/// The buckets that the partials of the slices in `[since, until)` fall in: one document
/// `{_id: bucket}` each.
pub fn touched_buckets_command(
    target: &Target<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> AggregateCommand {
    target.aggregate(
        target.partials_collection,
        vec![
            doc! {"$match": {"_id.r": {"$gte": date(since), "$lt": date(until)}}},
            doc! {"$group": {"_id": "$_id.w"}},
        ],
    )
}

/// The commands that write hourly windows from what is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishCommands {
    /// Gives every window a document (keeping its `createdAt`) first.
    pub seed: UpdateCommand,
    /// Sums the windows' partials of slices before `settled`, counts their user sets, adds the
    /// events of the `recent` windows written from `settled` on, and merges the documents.
    pub finish: AggregateCommand,
}

/// Writes `windows` (hourly, oldest first, not necessarily consecutive) from their partials of
/// the slices before `settled` and their user sets; the events written from `settled` on are read
/// from the audit log for the consecutive `recent` windows (the open one and those before it not
/// yet settled). Fenced when `target` has a fence.
pub fn finish_commands(
    target: &Target<'_>,
    windows: &[Window],
    recent: &[Window],
    settled: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<FinishCommands, PipelineError> {
    if windows.is_empty() {
        return Err(PipelineError::NoWindows);
    }
    let (buckets, window_of_bucket): (Vec<Bson>, Vec<Bson>) = windows
        .iter()
        .flat_map(|w| buckets_of(w).into_iter().map(|b| (date(b), date(w.start))))
        .unzip();
    let starts: Vec<Bson> = windows.iter().map(|w| date(w.start)).collect();
    let mut pipeline = stages(
        "pipelines/partial_windows.json",
        PARTIAL_WINDOWS_PIPELINE,
        &[
            ("buckets", Bson::Array(buckets)),
            ("settled", date(settled)),
            ("windowOfBucket", Bson::Array(window_of_bucket)),
            (
                "userSetsCollection",
                Bson::String(target.user_sets_collection.to_owned()),
            ),
            ("period", Bson::String(PERIOD.as_str().to_owned())),
            ("windowStarts", Bson::Array(starts.clone())),
        ],
    )?;
    // The tail: what was written since the last settled slice, read whole for the recent
    // windows only (they hold nearly all of it; a late event of another window waits for its
    // slice to settle).
    if let Some(tail) = Bindings::of(target, PERIOD, recent, now, bson::oid::ObjectId::new()) {
        let written = written_in(Some(settled), None);
        for (file, text) in [
            ("pipelines/rollup_counts.json", COUNTS_PIPELINE),
            ("pipelines/rollup_values.json", VALUES_PIPELINE),
        ] {
            let mut scan = written.clone();
            scan.extend(stages(file, text, &tail.scan())?);
            pipeline.push(doc! {"$unionWith": {
                "coll": target.audit_collection,
                "pipeline": scan.into_iter().map(Bson::Document).collect::<Vec<_>>(),
            }});
        }
    }
    let finish = stages(
        "pipelines/rollup_finish.json",
        FINISH_PIPELINE,
        &[
            ("windowStarts", Bson::Array(starts)),
            ("period", Bson::String(PERIOD.as_str().to_owned())),
            ("now", date(now)),
            (
                "metricsCollection",
                Bson::String(target.metrics_collection.to_owned()),
            ),
        ],
    )?;
    let Some((merge, shaping)) = finish.split_last() else {
        return Err(PipelineError::Shape {
            file: "pipelines/rollup_finish.json",
            expected: "a pipeline ending in $merge",
        });
    };
    pipeline.extend(shaping.iter().cloned());
    if let Some(fence) = &target.fence {
        pipeline.extend(fence.stages(target.state_collection));
    }
    pipeline.push(merge.clone());
    Ok(FinishCommands {
        seed: seed_command(target, PERIOD, windows, now)?,
        finish: target.aggregate(target.partials_collection, pipeline),
    })
}

/// Where an incremental period stands, kept in the state collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickMark {
    /// The first hourly window kept incrementally: its events are all in partials and sets.
    /// Earlier windows are the regular runs' (and their late-event scan's).
    pub origin: DateTime<Utc>,
    /// The first slice not yet kept (a slice start).
    pub since: DateTime<Utc>,
    /// The ranges of write time whose users are merged but not yet known complete, oldest
    /// first: each is checked once its slice is kept.
    pub reads: Vec<UsersRead>,
}

impl TickMark {
    /// A mark with no users read ahead of `since`.
    pub fn new(origin: DateTime<Utc>, since: DateTime<Utc>) -> TickMark {
        TickMark {
            origin,
            since,
            reads: Vec::new(),
        }
    }
}

/// A range of write time, within one slice, whose users a run merged, and how many events it
/// held just before the merge read it. Once the slice is kept, the range is counted again: the
/// same count means no event was inserted into it after the read (the audit log only grows), so
/// its users are all in the sets; another count means some were, and the range is merged again.
/// So each event's user is read once, and an event inserted late (within `settle`, as for the
/// partials) still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsersRead {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub events: u64,
}

/// `[from, to)` cut at slice starts, oldest first.
pub fn split_at_slices(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = chrono::Duration::milliseconds(SLICE_MS);
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (slice_start(start) + step).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// A range of the kept slices whose users are merged, again unless its count is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersCheck {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The events an earlier run's read found in the range, and the command counting them
    /// again; `None` for a range no run read, merged without counting.
    pub check: Option<(u64, AggregateCommand)>,
    pub merge: AggregateCommand,
}

/// The users this run reads first: its ranges (one per slice) are counted, then merged in one.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersAhead {
    pub ranges: Vec<(DateTime<Utc>, DateTime<Utc>, AggregateCommand)>,
    pub merge: AggregateCommand,
}

/// One run's keeping: the settled slices of `[since, until)` into partials; their users checked
/// (the ranges read by earlier runs, counted again) or merged (the ranges never read); and the
/// users written from the newest range read up to `cut`, counted and merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Keep {
    pub origin: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub slices: Vec<SliceCommands>,
    pub checks: Vec<UsersCheck>,
    pub ahead: Option<UsersAhead>,
    /// The reads still to check after this run (those ending after `until`).
    pub pending: Vec<UsersRead>,
    /// The buckets the kept slices fall in (read after they are kept).
    pub touched: AggregateCommand,
}

impl Keep {
    /// `cut` (a whole second, at or after `until`) ends this run's read of users.
    pub fn new(
        target: &Target<'_>,
        mark: &TickMark,
        until: DateTime<Utc>,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Keep, PipelineError> {
        let slices = slices(mark.since, until)
            .into_iter()
            .map(|slice| slice_commands(target, mark.origin, slice, now))
            .collect::<Result<Vec<_>, _>>()?;
        let merge = |from, to| user_set_command(target, mark.origin, from, to, now);
        // Reads of slices kept before are done with (checked, or dropped by a stale leader).
        let mut reads: Vec<UsersRead> = mark
            .reads
            .iter()
            .filter(|r| r.to > mark.since)
            .copied()
            .collect();
        reads.sort_by_key(|r| r.from);
        // The kept range: each read ending by `until` is checked; what no read covers, merged.
        // (A read lies within one slice, and `until` is a slice start, so none straddles it.)
        let mut checks = Vec::new();
        let mut covered = mark.since;
        let unread = |from: DateTime<Utc>, to: DateTime<Utc>, checks: &mut Vec<UsersCheck>| {
            if from < to {
                checks.push(UsersCheck {
                    from,
                    to,
                    check: None,
                    merge: merge(from, to)?,
                });
            }
            Ok::<_, PipelineError>(())
        };
        for read in reads.iter().filter(|r| r.to <= until) {
            unread(covered, read.from, &mut checks)?;
            checks.push(UsersCheck {
                from: read.from,
                to: read.to,
                check: Some((
                    read.events,
                    written_count_command(target, read.from, read.to),
                )),
                merge: merge(read.from, read.to)?,
            });
            covered = covered.max(read.to);
        }
        unread(covered, until, &mut checks)?;
        let pending: Vec<UsersRead> = reads.into_iter().filter(|r| r.to > until).collect();
        let from = pending
            .iter()
            .map(|r| r.to)
            .max()
            .unwrap_or(until)
            .max(until);
        let ahead = if from < cut {
            Some(UsersAhead {
                ranges: split_at_slices(from, cut)
                    .into_iter()
                    .map(|(a, b)| (a, b, written_count_command(target, a, b)))
                    .collect(),
                merge: merge(from, cut)?,
            })
        } else {
            None
        };
        Ok(Keep {
            origin: mark.origin,
            since: mark.since,
            until,
            now,
            slices,
            checks,
            ahead,
            pending,
            touched: touched_buckets_command(target, mark.since, until),
        })
    }
}

/// What a run's keeping did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Kept {
    /// The buckets the kept slices fall in.
    pub touched: Vec<DateTime<Utc>>,
    /// The reads of users still to check: the pending ones and this run's, oldest first.
    pub reads: Vec<UsersRead>,
    /// The checked ranges whose count had changed, so their users were merged again.
    pub merged_again: usize,
}

/// One run's writing of hourly windows from what is kept (see [`finish_commands`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub windows: Vec<Window>,
    /// The windows whose writes from `settled` on are read from the audit log too.
    pub recent: Vec<Window>,
    /// The first slice not kept: partials before it, the audit log from it.
    pub settled: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The lease the `$merge` is fenced by (bound into `commands.finish`).
    pub fence: Option<super::commands::Fence>,
    pub commands: FinishCommands,
}

impl Finish {
    pub fn new(
        target: &Target<'_>,
        windows: &[Window],
        recent: &[Window],
        settled: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Finish, PipelineError> {
        Ok(Finish {
            windows: windows.to_vec(),
            recent: recent.to_vec(),
            settled,
            now,
            fence: target.fence.clone(),
            commands: finish_commands(target, windows, recent, settled, now)?,
        })
    }
}

/// The commands of a tick as `vcmetrics pipelines --tick` prints them, in the order a run sends
/// them: each settled slice's two scans, the user-set merge, the touched buckets, the seed and
/// the finish of `windows`.
pub fn tick_commands(
    target: &Target<'_>,
    origin: DateTime<Utc>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    windows: &[Window],
    now: DateTime<Utc>,
) -> Result<Vec<(String, Document)>, PipelineError> {
    let mut out = Vec::new();
    let mut push = |command: &AggregateCommand| {
        out.push((command.database.clone(), command.to_command()));
    };
    for slice in slices(since, until) {
        let scans = slice_commands(target, origin, slice, now)?;
        push(&scans.counts);
        push(&scans.values);
    }
    push(&user_set_command(
        target,
        origin,
        since,
        whole_second(now),
        now,
    )?);
    push(&touched_buckets_command(target, since, until));
    let finish = finish_commands(target, windows, windows, until, now)?;
    out.push((finish.seed.database.clone(), finish.seed.to_command()));
    out.push((finish.finish.database.clone(), finish.finish.to_command()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Calendar;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    use crate::rollup::pipeline::tests::target;

    #[test]
    fn slices_are_whole_minutes_of_write_time() {
        assert_eq!(
            slices(utc("2026-03-01T10:00:30Z"), utc("2026-03-01T10:03:00Z")),
            vec![
                utc("2026-03-01T10:00:00Z"),
                utc("2026-03-01T10:01:00Z"),
                utc("2026-03-01T10:02:00Z")
            ]
        );
        assert!(slices(utc("2026-03-01T10:03:00Z"), utc("2026-03-01T10:03:00Z")).is_empty());
    }

    #[test]
    fn a_slice_is_an_id_range_kept_per_bucket_under_its_own_key() {
        let origin = utc("2026-03-01T10:00:00Z");
        let slice = utc("2026-03-01T10:07:00Z");
        let c = slice_commands(&target(), origin, slice, utc("2026-03-01T10:09:00Z")).unwrap();
        for scan in [&c.counts, &c.values] {
            assert_eq!(
                scan.pipeline[0],
                doc! {"$match": {"_id": {"$gte": object_id_at(slice),
                "$lt": object_id_at(utc("2026-03-01T10:08:00Z"))}}}
            );
            let n = scan.pipeline.len();
            let key = scan.pipeline[n - 2]
                .get_document("$group")
                .unwrap()
                .get_document("_id")
                .unwrap();
            assert_eq!(key.get("r"), Some(&date(slice)));
            assert_eq!(
                scan.pipeline[n - 1],
                doc! {"$merge": {"into": "videocallmetrics_partials", "on": "_id",
                "whenMatched": "replace", "whenNotMatched": "insert"}}
            );
        }
    }

    #[test]
    fn user_sets_are_merged_never_replaced() {
        let c = user_set_command(
            &target(),
            utc("2026-03-01T10:00:00Z"),
            utc("2026-03-01T10:07:00Z"),
            utc("2026-03-01T10:08:05Z"),
            utc("2026-03-01T10:09:00Z"),
        )
        .unwrap();
        assert_eq!(
            c.pipeline[0],
            doc! {"$match": {"_id": {"$gte": object_id_at(utc("2026-03-01T10:07:00Z")),
            "$lt": object_id_at(utc("2026-03-01T10:08:05Z"))}}}
        );
        let merge = c.pipeline.last().unwrap().get_document("$merge").unwrap();
        assert_eq!(merge.get_str("whenMatched").unwrap(), "merge");
        assert_eq!(merge.get_str("into").unwrap(), "videocallmetrics_users");
    }

    /// A check's range (as times of day) and the count it expects (`None`: merged unread).
    type Checked = (String, String, Option<u64>);

    fn ranges(keep: &Keep) -> (Vec<Checked>, Vec<(String, String)>) {
        let t = |d: &DateTime<Utc>| d.format("%H:%M:%S").to_string();
        let checks = keep
            .checks
            .iter()
            .map(|c| (t(&c.from), t(&c.to), c.check.as_ref().map(|(n, _)| *n)))
            .collect();
        let ahead = keep
            .ahead
            .iter()
            .flat_map(|a| a.ranges.iter().map(|(from, to, _)| (t(from), t(to))))
            .collect();
        (checks, ahead)
    }

    #[test]
    fn a_first_run_merges_the_kept_slices_users_and_reads_ahead_to_the_cut() {
        let mark = TickMark::new(utc("2026-03-01T10:00:00Z"), utc("2026-03-01T09:59:00Z"));
        let keep = Keep::new(
            &target(),
            &mark,
            utc("2026-03-01T10:01:00Z"),
            utc("2026-03-01T10:02:05Z"),
            utc("2026-03-01T10:02:05Z"),
        )
        .unwrap();
        let (checks, ahead) = ranges(&keep);
        assert_eq!(checks, vec![("09:59:00".into(), "10:01:00".into(), None)]);
        assert_eq!(
            ahead,
            vec![
                ("10:01:00".into(), "10:02:00".into()),
                ("10:02:00".into(), "10:02:05".into())
            ]
        );
        assert!(keep.pending.is_empty());
        let merge = &keep.ahead.as_ref().unwrap().merge;
        assert_eq!(
            merge.pipeline[0],
            doc! {"$match": {"_id": {"$gte": object_id_at(utc("2026-03-01T10:01:00Z")),
            "$lt": object_id_at(utc("2026-03-01T10:02:05Z"))}}}
        );
    }

    #[test]
    fn reads_of_kept_slices_are_checked_the_rest_wait_and_the_next_read_starts_after_them() {
        let read = |from: &str, to: &str, events| UsersRead {
            from: utc(from),
            to: utc(to),
            events,
        };
        let mark = TickMark {
            origin: utc("2026-03-01T10:00:00Z"),
            since: utc("2026-03-01T10:05:00Z"),
            reads: vec![
                read("2026-03-01T10:06:00Z", "2026-03-01T10:06:05Z", 1),
                // Of a slice kept before: done with.
                read("2026-03-01T10:04:05Z", "2026-03-01T10:05:00Z", 9),
                read("2026-03-01T10:05:05Z", "2026-03-01T10:06:00Z", 5),
            ],
        };
        let keep = Keep::new(
            &target(),
            &mark,
            utc("2026-03-01T10:06:00Z"),
            utc("2026-03-01T10:07:05Z"),
            utc("2026-03-01T10:07:05Z"),
        )
        .unwrap();
        let (checks, ahead) = ranges(&keep);
        assert_eq!(
            checks,
            vec![
                ("10:05:00".into(), "10:05:05".into(), None),
                ("10:05:05".into(), "10:06:00".into(), Some(5))
            ]
        );
        assert_eq!(
            keep.pending,
            vec![read("2026-03-01T10:06:00Z", "2026-03-01T10:06:05Z", 1)]
        );
        assert_eq!(
            ahead,
            vec![
                ("10:06:05".into(), "10:07:00".into()),
                ("10:07:00".into(), "10:07:05".into())
            ]
        );
        let check = &keep.checks[1];
        let (_, count) = check.check.as_ref().unwrap();
        assert_eq!(
            count.pipeline,
            vec![
                doc! {"$match": {"_id": {"$gte": object_id_at(utc("2026-03-01T10:05:05Z")),
                "$lt": object_id_at(utc("2026-03-01T10:06:00Z"))}}},
                doc! {"$count": "n"}
            ]
        );
        // Nothing new to read: no read ahead.
        let idle = Keep::new(
            &target(),
            &mark,
            utc("2026-03-01T10:06:00Z"),
            utc("2026-03-01T10:06:05Z"),
            utc("2026-03-01T10:06:05Z"),
        )
        .unwrap();
        assert!(idle.ahead.is_none());
    }

    #[test]
    fn a_window_has_four_buckets_in_every_zone() {
        let india = Calendar::new("Asia/Kolkata".parse().unwrap(), chrono::Weekday::Mon);
        let w = india.window_containing(Period::Hourly, utc("2026-03-01T10:40:00Z"));
        assert_eq!(
            buckets_of(&w),
            vec![
                utc("2026-03-01T10:30:00Z"),
                utc("2026-03-01T10:45:00Z"),
                utc("2026-03-01T11:00:00Z"),
                utc("2026-03-01T11:15:00Z")
            ]
        );
    }

    #[test]
    fn the_finish_reads_partials_then_the_tail_and_is_fenced() {
        let calendar = Calendar::default();
        let windows = calendar.windows_covering(
            Period::Hourly,
            utc("2026-03-01T09:00:00Z"),
            utc("2026-03-01T11:00:00Z"),
        );
        let mut fenced = target();
        fenced.fence = Some(super::super::commands::Fence {
            holder: "a".into(),
            epoch: 3,
        });
        let settled = utc("2026-03-01T10:20:00Z");
        let c = finish_commands(
            &fenced,
            &windows,
            &windows[1..],
            settled,
            utc("2026-03-01T10:21:10Z"),
        )
        .unwrap();
        assert_eq!(c.finish.collection, "videocallmetrics_partials");
        assert_eq!(c.seed.updates.len(), 2);
        let tails: Vec<&Document> = c
            .finish
            .pipeline
            .iter()
            .filter_map(|s| s.get_document("$unionWith").ok())
            .filter(|u| u.get_str("coll") == Ok("videocallauditlogs"))
            .collect();
        assert_eq!(tails.len(), 2);
        for tail in tails {
            let first = tail.get_array("pipeline").unwrap()[0]
                .as_document()
                .unwrap();
            assert_eq!(
                first,
                &doc! {"$match": {"_id": {"$gte": object_id_at(settled)}}}
            );
        }
        let n = c.finish.pipeline.len();
        assert!(c.finish.pipeline[n - 4].contains_key("$lookup"));
        assert!(c.finish.pipeline[n - 1].contains_key("$merge"));
    }
}
