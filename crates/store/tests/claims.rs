//! Run claims between replicas: two `Store`s open on one database stand for two
//! servers (see `wharf_store::claims`). Every test runs on SQLite and PostgreSQL.

#[macro_use]
mod backends;

use std::collections::BTreeMap;
use std::time::Duration;
use wharf_core::model::Concurrency;
use wharf_core::run::{Cause, Progress, RunRecord};
use wharf_core::status::Status;
use wharf_store::claims::{Claimed, StopAsked};
use wharf_store::{Store, StoreError};

const LONG: Duration = Duration::from_secs(60);

fn record(number: i64) -> RunRecord {
    RunRecord {
        pipeline: "app".into(),
        number: number as u64,
        cause: Cause::Manual { user: "admin".into() },
        parameters: BTreeMap::new(),
        progress: Progress::new(jiff::Timestamp::now()),
        reason: None,
        checkout: None,
        stages: vec![],
    }
}

/// Two stores on `url` and a pipeline with `runs` queued runs (their ids). SQLite has
/// one server per database: there the two share one `Store` (its one writer), as two
/// processes on one file would share SQLite's lock.
async fn two_replicas(url: &str, runs: usize) -> (Store, Store, i64, Vec<i64>) {
    let a = Store::open(url).await.expect("replica A opens the store");
    let b = if a.is_postgres() { Store::open(url).await.expect("replica B opens the store") } else { a.clone() };
    let p = a.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..runs {
        ids.push(a.create_run(p.id, 1, None, None, |new| record(new.number)).await.unwrap().0.id);
    }
    (a, b, p.id, ids)
}

/// `record` moved on to `status` (as the engine would), written under `fence`.
async fn write(store: &Store, run_id: i64, fence: i64, status: Status) -> Result<usize, StoreError> {
    let mut rec = store.run(run_id).await.unwrap().record;
    let now = jiff::Timestamp::now();
    if status.is_terminal() && rec.progress.status == Status::Queued {
        rec.progress.advance(Status::Running, now).unwrap();
    }
    rec.progress.advance(status, now).unwrap();
    store.save_record_fenced(run_id, &rec, fence).await
}

async fn racing_claimers_claim_each_run_once(url: String) {
    let (a, b, pipeline, ids) = two_replicas(&url, 30).await;
    let mut claimers = Vec::new();
    for (store, owner) in [(a.clone(), "a"), (b.clone(), "b"), (a.clone(), "a2"), (b.clone(), "b2")] {
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for run in store.claimable_runs(100).await.unwrap() {
                let id = run.run_id;
                if let Claimed::Start { fence, .. } =
                    store.claim_queued(id, pipeline, Concurrency::Allow, owner, LONG).await.unwrap()
                {
                    mine.push((id, fence));
                }
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    claimed.sort();
    let once: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
    assert_eq!(once, ids, "every run claimed exactly once: {claimed:?}");
    assert!(claimed.iter().all(|(_, fence)| *fence == 1), "a first claim has fence 1");
    assert!(a.claimable_runs(100).await.unwrap().is_empty(), "a claimed run is not claimable while its lease holds");
}

async fn a_write_under_an_old_fence_is_refused_after_a_takeover(url: String) {
    let (a, b, pipeline, ids) = two_replicas(&url, 1).await;
    let run = ids[0];
    let Claimed::Start { fence, .. } =
        a.claim_queued(run, pipeline, Concurrency::Queue, "a", Duration::from_millis(600)).await.unwrap()
    else {
        panic!("replica A could not claim the only queued run")
    };
    write(&a, run, fence, Status::Running).await.expect("the owner writes under its fence");
    assert_eq!(b.take_over(run, "b", LONG).await.unwrap().map(|(f, _)| f), None, "the lease still holds");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(b.lapsed_runs(10).await.unwrap(), [run]);
    let (taken, row) = b.take_over(run, "b", LONG).await.unwrap().expect("B takes the lapsed run over");
    assert_eq!((taken, row.summary.status), (fence + 1, Status::Running));
    assert_eq!(a.take_over(run, "a", LONG).await.unwrap().map(|(f, _)| f), None, "taken once");

    // A wakes up past its lease: its write is refused, B's goes through.
    let refused = write(&a, run, fence, Status::Failed).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(id) if id == run), "{refused}");
    assert_eq!(a.run(run).await.unwrap().summary.status, Status::Running, "nothing of A's was written");
    assert!(a.renew_leases("a", &[run], LONG).await.unwrap().is_empty(), "A's renewal finds the run gone");
    write(&b, run, taken, Status::Succeeded).await.expect("the new owner writes");
    assert_eq!(a.run(run).await.unwrap().summary.status, Status::Succeeded);
}

async fn a_renewed_lease_is_not_taken_over(url: String) {
    let (a, b, pipeline, ids) = two_replicas(&url, 1).await;
    let run = ids[0];
    let lease = Duration::from_millis(300);
    let Claimed::Start { fence, .. } = a.claim_queued(run, pipeline, Concurrency::Allow, "a", lease).await.unwrap()
    else {
        panic!("not claimed")
    };
    write(&a, run, fence, Status::Running).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let renewed = a.renew_leases("a", &[run], lease).await.unwrap();
        assert_eq!(renewed.iter().map(|r| (r.run_id, r.fence)).collect::<Vec<_>>(), [(run, fence)]);
        assert!(b.lapsed_runs(10).await.unwrap().is_empty(), "a renewed lease does not lapse");
        assert!(b.take_over(run, "b", LONG).await.unwrap().is_none());
    }
    // Released (a graceful stop), it is taken over at once.
    assert!(a.release_lease(run, fence).await.unwrap());
    assert_eq!(b.take_over(run, "b", LONG).await.unwrap().map(|(f, _)| f), Some(fence + 1));
}

async fn concurrency_policies_hold_across_replicas(url: String) {
    // queue: B waits while A's run is in progress, then starts the next one.
    let (a, b, pipeline, ids) = two_replicas(&url, 2).await;
    let Claimed::Start { fence, .. } = a.claim_queued(ids[0], pipeline, Concurrency::Queue, "a", LONG).await.unwrap()
    else {
        panic!("the first run is not claimed")
    };
    assert_eq!(b.claim_queued(ids[1], pipeline, Concurrency::Queue, "b", LONG).await.unwrap(), Claimed::Wait);
    write(&a, ids[0], fence, Status::Running).await.unwrap();
    assert_eq!(b.claim_queued(ids[1], pipeline, Concurrency::Queue, "b", LONG).await.unwrap(), Claimed::Wait);
    write(&a, ids[0], fence, Status::Succeeded).await.unwrap();
    assert!(matches!(
        b.claim_queued(ids[1], pipeline, Concurrency::Queue, "b", LONG).await.unwrap(),
        Claimed::Start { .. }
    ));

    // cancel-previous: the newest run starts and asks the one in progress to stop;
    // an older queued one is superseded.
    let new_run = || async { a.create_run(pipeline, 1, None, None, |new| record(new.number)).await.unwrap().0.id };
    let cancel = Concurrency::CancelPrevious;
    let first = new_run().await;
    let Claimed::Start { .. } = a.claim_queued(first, pipeline, cancel, "a", LONG).await.unwrap() else {
        panic!("not claimed")
    };
    let more = [first, new_run().await, new_run().await];
    assert!(matches!(b.claim_queued(more[1], pipeline, cancel, "b", LONG).await.unwrap(), Claimed::Superseded { .. }));
    let Claimed::Start { supersede, .. } = b.claim_queued(more[2], pipeline, cancel, "b", LONG).await.unwrap() else {
        panic!("the newest run does not start")
    };
    assert_eq!(supersede, [more[0]], "the run in progress is superseded, the one ending unstarted is not");
    let asked = b.renew_leases("b", &[ids[1]], LONG).await.unwrap();
    let first_number = a.run(more[0]).await.unwrap().summary.number;
    assert_eq!(asked[0].stop_request, Some(format!("superseded:{first_number}")), "the earlier start asked too");
    let number = b.run(more[2]).await.unwrap().summary.number;
    let renewed = a.renew_leases("a", &[more[0]], LONG).await.unwrap();
    assert_eq!(renewed[0].stop_request.as_deref(), Some(format!("superseded:{number}").as_str()));
}

async fn a_stop_asked_elsewhere_reaches_the_owner(url: String) {
    let (a, b, pipeline, ids) = two_replicas(&url, 2).await;
    let Claimed::Start { .. } = a.claim_queued(ids[0], pipeline, Concurrency::Allow, "a", LONG).await.unwrap() else {
        panic!("not claimed")
    };
    assert_eq!(b.request_stop(ids[0], "b", LONG).await.unwrap(), StopAsked::Asked);
    let renewed = a.renew_leases("a", &[ids[0]], LONG).await.unwrap();
    assert_eq!(renewed[0].stop_request.as_deref(), Some("stopped"));
    // A queued run nobody holds is claimed by the stopper, to end it.
    let StopAsked::Claimed { fence } = b.request_stop(ids[1], "b", LONG).await.unwrap() else {
        panic!("the queued run is not claimed for its stop")
    };
    assert!(a.claim_queued(ids[1], pipeline, Concurrency::Allow, "a", LONG).await.unwrap() == Claimed::Gone);
    write(&b, ids[1], fence, Status::Stopped).await.unwrap();
    assert_eq!(a.request_stop(ids[1], "a", LONG).await.unwrap(), StopAsked::Ended);
}

async fn every_replica_sees_one_installation_id(url: String) {
    let (a, b, _, _) = two_replicas(&url, 0).await;
    let (one, two) = tokio::join!(a.installation_id(), b.installation_id());
    let one = one.unwrap();
    assert_eq!(one.len(), 32);
    assert_eq!(one, two.unwrap());
    assert_eq!(one, a.installation_id().await.unwrap());
}

/// PostgreSQL only: replicas share it, while SQLite has one server per database.
#[tokio::test]
async fn replicas_starting_at_once_migrate_once() {
    let Some((_keep, url)) = backends::postgres_url() else { return };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every replica starting at once opens the store");
    }
}

on_both!(
    url: racing_claimers_claim_each_run_once,
    a_write_under_an_old_fence_is_refused_after_a_takeover,
    a_renewed_lease_is_not_taken_over,
    concurrency_policies_hold_across_replicas,
    a_stop_asked_elsewhere_reaches_the_owner,
    every_replica_sees_one_installation_id,
);
