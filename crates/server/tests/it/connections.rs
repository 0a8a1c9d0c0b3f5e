//! The connection loop on a real socket: slow and idle clients cannot starve the server.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vigil_server::HttpLimits;

use crate::common::empty_state;

/// Sends one `GET path` on a fresh connection and returns the status line.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether the server closed `s` (a read returns end of file or an error) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

// 20,000 idle connections that never finished their headers used to exhaust the server's file
// descriptors (no header-read timeout, no connection limit): /healthz stopped answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_shed_and_health_still_answers_during_a_flood() {
    let limits = HttpLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(3),
        ..HttpLimits::default()
    };
    let state = empty_state(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_server::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    // A flood of connections that send nothing, far past max_connections.
    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half a head: a slowloris client, served as one more pressed connection.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Past twice the limit, connections are closed at once.
    let mut shed = 0;
    for s in &mut flood {
        if closed_within(s, Duration::from_millis(50)).await {
            shed += 1;
        }
    }
    assert!(shed >= 30 - 16, "only {shed} of 30 were shed at once");
    // Past the limit they get one second to send a request: the flood is gone after it, and
    // a health probe (which sends its request at once) is answered at once.
    tokio::time::sleep(vigil_server::listen::PRESSED_HEADER_TIMEOUT + Duration::from_millis(300))
        .await;
    let t = Instant::now();
    let status = get(addr, "/healthz").await;
    assert!(status.contains("200"), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Within the limit, the header-read timeout: no idle connection stays open for good.
    for s in &mut flood {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "an idle connection is kept"
        );
    }
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "slowloris kept"
    );
    // And the server still serves.
    assert!(get(addr, "/healthz").await.contains("200"));
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("shutdown hangs")
        .unwrap()
        .unwrap();
}
