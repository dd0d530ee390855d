//! Acknowledged means durable: a `vaxcamp serve` child process under concurrent dose traffic is
//! killed with SIGKILL; after a restart every dose that got a 2xx is stored exactly once, and
//! retrying every dose that was sent (answered or not) records each exactly once.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

fn vaxcamp(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vaxcamp"))
        // These tests are about the embedded store, even when the ScyllaDB tests are pointed at
        // a cluster through the environment.
        .env_remove("VAXCAMP_SCYLLA_NODES")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "vaxcamp {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap().trim().to_owned()
}

/// Starts `vaxcamp serve` on a free loopback port and returns it with its address, read from
/// its log line `listening addr=...`.
fn serve(data: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaxcamp"))
        // These tests are about the embedded store, even when the ScyllaDB tests are pointed at
        // a cluster through the environment.
        .env_remove("VAXCAMP_SCYLLA_NODES")
        .args([
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env("VAXCAMP_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(
                    addr.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logged its address");
    (child, format!("http://{addr}"))
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_doses_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let admin = last_line(&vaxcamp(&["init", "--data", data_arg, "--shards", "2"]));
    let site = last_line(&vaxcamp(&[
        "site",
        "add",
        "--data",
        data_arg,
        "--id",
        "s1",
        "--name",
        "Trạm Y tế 1",
        "--province",
        "01",
        "--district",
        "001",
    ]));
    vaxcamp(&[
        "lot",
        "add",
        "--data",
        data_arg,
        "--site",
        "s1",
        "--product",
        "COMIRNATY",
        "--lot",
        "L1",
        "--expires",
        "2099-12-31",
        "--doses",
        "1000000",
    ]);
    let people = 4000;
    let mut csv = String::from(
        "person_code,name,birth_date,phone,province,district,commune,priority_group\n",
    );
    for i in 0..people {
        csv.push_str(&format!("C{i:06},Người {i},1970-01-01,,01,001,,5\n"));
    }
    let csv_path = dir.path().join("people.csv");
    std::fs::write(&csv_path, csv).unwrap();
    vaxcamp(&[
        "import",
        "registrations",
        "--data",
        data_arg,
        csv_path.to_str().unwrap(),
    ]);

    let (mut child, base) = serve(&data);
    let client = reqwest::Client::new();
    let sent: Arc<Mutex<Vec<Value>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let at = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    // Sixteen site tablets sending doses as fast as they are answered.
    let mut tablets = Vec::new();
    for t in 0..16 {
        let (client, base, site, sent, acked, at) = (
            client.clone(),
            base.clone(),
            site.clone(),
            sent.clone(),
            acked.clone(),
            at.clone(),
        );
        tablets.push(tokio::spawn(async move {
            for i in (t..people).step_by(16) {
                let id = uuid::Uuid::new_v4().to_string();
                let body = json!({"dose_id": id, "person_code": format!("C{i:06}"), "lot": "L1", "dose_number": 1,
                                  "vaccinator": "nurse", "administered_at": at});
                sent.lock().unwrap().push(body.clone());
                match post(&client, &format!("{base}/v1/doses"), &site, &body).await {
                    Ok((201 | 200, _)) => acked.lock().unwrap().push(id),
                    Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                    Err(_) => return, // The server is gone.
                }
            }
        }));
    }
    // Kill the server mid-traffic, once a good number of doses were acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 600 {
        assert!(
            std::time::Instant::now() < deadline,
            "traffic never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush.
    child.wait().unwrap();
    for tablet in tablets {
        tablet.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let sent: Vec<Value> = sent.lock().unwrap().clone();
    assert!(
        acked.len() < sent.len() || sent.len() == people,
        "the kill happened mid-traffic"
    );

    // Restart on the same data: every acknowledged dose is there, once.
    let (mut child, base) = serve(&data);
    for chunk in acked.chunks(5000) {
        let (status, lookup) = post(
            &client,
            &format!("{base}/v1/doses:lookup"),
            &admin,
            &json!({"dose_ids": chunk}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{lookup}");
        assert_eq!(lookup["missing"], json!([]), "acknowledged doses lost");
        assert!(
            lookup["found"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["copies"] == 1)
        );
    }

    // Retrying everything that was sent records each dose exactly once: 200 when it had been
    // committed before the kill (even if its answer was lost), 201 when it had not.
    let acked_set: HashSet<&String> = acked.iter().collect();
    for body in &sent {
        let (status, answer) = post(&client, &format!("{base}/v1/doses"), &site, body)
            .await
            .unwrap();
        assert!(status == 200 || status == 201, "{status}: {answer}");
        if acked_set.contains(&body["dose_id"].as_str().unwrap().to_owned()) {
            assert_eq!(status, 200, "an acknowledged dose is a duplicate on retry");
        }
    }
    let stats = get(&client, &format!("{base}/v1/stats"), &admin).await;
    assert_eq!(
        stats["doses"],
        json!(sent.len()),
        "one stored dose per dose sent"
    );
    // The analytics outbox survived the kill too: once it has drained, the embedded rollups hold
    // every stored dose exactly once (replays of rows shipped before the kill are absorbed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let uptake = get(
            &client,
            &format!("{base}/v1/analytics/uptake?level=site&granularity=day&days=366"),
            &admin,
        )
        .await;
        let counted: u64 = uptake["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["doses"].as_u64().unwrap())
            .sum();
        if counted == sent.len() as u64 {
            break;
        }
        assert!(
            counted < sent.len() as u64 && std::time::Instant::now() < deadline,
            "analytics counted {counted} doses of {} stored",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
