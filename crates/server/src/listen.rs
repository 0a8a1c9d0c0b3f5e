//! The connection loop: accepts TCP connections and serves each with hyper's HTTP/1 under the
//! limits in [`HttpLimits`], until shutdown. It owns what a slow or hostile client can do to
//! the server before a request reaches a route; it must not look at requests themselves.
//!
//! - **Header-read timeout** (hyper's own timer): a connection that has not sent a whole
//!   request head within `header_read_timeout` is closed; this also ends idle keep-alive
//!   connections.
//! - **Connection limit**: up to `max_connections` connections are served normally. Past it
//!   (a slow-client flood), a new connection is still accepted but gets only
//!   [`PRESSED_HEADER_TIMEOUT`] to send its request head: a health probe or a real client
//!   sends it at once and is served, while the flood's idle connections are shed within that
//!   time. At twice the limit new connections are closed at once, so file descriptors and
//!   memory stay bounded whatever arrives.
//! - **Body timeout** (tower-http): a body that has not arrived within `body_timeout` fails
//!   the request (the route answers 400) instead of holding its memory.
//! - **Graceful shutdown** (hyper-util): on shutdown the listener closes, idle connections
//!   close at once, and requests in flight are answered.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::HttpLimits;

/// The header-read timeout of connections accepted past `max_connections`: long enough for a
/// client on a slow network to send a request line and a few headers, short enough that a
/// flood of idle connections is shed faster than it can grow.
pub const PRESSED_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the accept loop pauses after an accept error (out of file descriptors, most
/// likely), so that it does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and waits for
/// the connections' requests in flight to be answered.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let normal = builder(limits.header_read_timeout);
    let pressed = builder(PRESSED_HEADER_TIMEOUT.min(limits.header_read_timeout));
    let soft = limits.max_connections.max(1);
    let hard = Arc::new(Semaphore::new(soft.saturating_mul(2)));
    let graceful = GracefulShutdown::new();
    let mut shed: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot accept a connection.");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&hard).try_acquire_owned() else {
            shed += 1;
            // One line per thousand, not one per connection of a flood.
            if shed % 1000 == 1 {
                tracing::warn!(
                    limit = soft,
                    shed,
                    "Connections over twice server.max_connections are closed at once."
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = soft.saturating_mul(2) - hard.available_permits();
        let http = if open > soft { &pressed } else { &normal };
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's: a reset, a timeout, a malformed head.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "A connection ended with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// hyper's HTTP/1 settings for one class of connection.
fn builder(header_read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    b
}
