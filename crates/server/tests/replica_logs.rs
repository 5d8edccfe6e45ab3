//! Logs across replicas: two servers on one PostgreSQL (each with its own data
//! directory, as replicas are), a task running on one and followed live on the other,
//! over SSE and the plain tail, every line exactly once and in order.

mod common;

use common::{SseEvent, SseReader, TestServer, id_of};
use reqwest::Method;

const LINES: u32 = 40;

fn pipeline() -> String {
    format!(
        "name: chatty
stages:
  - name: Build
    tasks:
      - name: main
        type: script
        script: |
          for i in $(seq 1 {LINES}); do echo \"chatty line $i\"; sleep 0.05; done
"
    )
}

async fn stream(s: &TestServer, id: i64, last_event_id: Option<&str>) -> SseReader {
    let mut request = s.client.get(s.url(&format!("/runs/{id}/tasks/main/log/stream")));
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    SseReader::new(response)
}

fn numbers(events: &[SseEvent]) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.event.is_none())
        .filter_map(|e| e.data.rsplit_once(" line ").and_then(|(_, n)| n.parse().ok()))
        .collect()
}

/// Reads until `end` (or until `stop_after` lines, when given).
async fn read(reader: &mut SseReader, stop_after: Option<usize>) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let batch = reader.next_events().await;
        assert!(!batch.is_empty(), "the stream ended without `event: end`: {events:?}");
        events.extend(batch);
        if events.iter().any(|e| e.event.as_deref() == Some("end")) {
            return events;
        }
        if stop_after.is_some_and(|n| numbers(&events).len() >= n) {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_one_replica_is_followed_live_on_another() {
    let Some(pg) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let (url_a, url_b) = (pg.url.clone(), pg.url.clone());
    let a = common::start_with(tempfile::tempdir().unwrap(), |c| c.database_url = Some(url_a)).await;
    let b = common::start_with(tempfile::tempdir().unwrap(), |c| c.database_url = Some(url_b)).await;
    assert!(a.server.state.logs.is_database() && b.server.state.logs.is_database());

    let created = a.send_yaml(Method::POST, "/pipelines?run=true", &pipeline()).await.expect(201).json;
    let id = id_of(&created["run"]);
    a.wait_task_running(id, "main").await;

    // B follows from the start; a second reader on B stops part-way and comes back on A.
    let mut on_b = stream(&b, id, None).await;
    let mut partial = stream(&b, id, None).await;
    let first = read(&mut partial, Some(10)).await;
    let last_id = first.iter().rev().find_map(|e| e.id.clone()).expect("lines carry ids");
    let mut rest = stream(&a, id, Some(&last_id)).await;

    let all = read(&mut on_b, None).await;
    assert_eq!(numbers(&all), (1..=LINES).collect::<Vec<_>>(), "every line once, in order, on the other replica");
    let rest = read(&mut rest, None).await;
    let mut joined = numbers(&first);
    joined.extend(numbers(&rest));
    assert_eq!(joined, (1..=LINES).collect::<Vec<_>>(), "resumed on another replica: nothing lost or repeated");

    // The plain tail and the whole download agree on both servers.
    let run = b.wait_run(id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let tail_a = a.tail(id, "main", None).await.expect(200);
    let tail_b = b.tail(id, "main", None).await.expect(200);
    assert_eq!(tail_a.text, tail_b.text);
    assert_eq!(tail_b.text.matches("chatty line").count(), LINES as usize);
    assert_eq!(tail_b.header("x-more-data"), Some("false"));
    let half = tail_b.text.len() / 2;
    let cut = tail_b.text[..half].rfind('\n').unwrap() + 1;
    let from = b.tail(id, "main", Some(&cut.to_string())).await.expect(200).text;
    assert_eq!(from, tail_b.text[cut..]);
    assert!(b.get(&format!("/runs/{id}/log")).await.expect(200).text.contains(&format!("chatty line {LINES}")));

    for s in [a, b] {
        let TestServer { server, .. } = s;
        server.shutdown().await;
    }
}
