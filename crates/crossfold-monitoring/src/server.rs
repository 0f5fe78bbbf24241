//! Serving [`Endpoints`] over HTTP/1.1 with hyper, the HTTP library the Prometheus exporter's
//! own listener is built on.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::endpoints::{EndpointResponse, Endpoints};

/// A client that has not sent its request head by then is dropped: an idle or slow
/// connection must not hold a task of the host application for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoints being served; see [`Endpoints::serve`]. Dropping it stops accepting
/// connections (as [`shutdown`](Self::shutdown) does).
#[derive(Debug)]
pub struct MonitoringServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl MonitoringServer {
    /// The address the server listens on (with port 0 requested, the port the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the accepting task to end. Requests already
    /// being answered finish on their own.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for MonitoringServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Endpoints {
    /// Serves `/metrics`, `/health/live` and `/health/ready` on `addr` (for example
    /// `"0.0.0.0:9464"`, or port 0 for any free port) from a task on the current Tokio runtime,
    /// and returns once the socket is bound. `GET` and `HEAD` are answered; other methods get
    /// `405`. Fails with the [`io::Error`] of binding the address.
    ///
    /// ```no_run
    /// use crossfold_monitoring::{Endpoints, HealthRegistry, install_prometheus};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let metrics = install_prometheus()?;
    /// let server = Endpoints::new(metrics)
    ///     .health(HealthRegistry::new() /* .register("event_store", store.clone()) */)
    ///     .serve("0.0.0.0:9464")
    ///     .await?;
    /// println!("metrics on http://{}/metrics", server.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(self, addr: impl ToSocketAddrs) -> io::Result<MonitoringServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel();
        let endpoints = Arc::new(self);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => break,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: pause instead of spinning, then accept again.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let endpoints = endpoints.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let endpoints = endpoints.clone();
                        async move { Ok::<_, Infallible>(endpoints.http(&request).await) }
                    });
                    // A client that goes away mid-request is not the server's problem.
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MonitoringServer {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    /// The answer to an [`http::Request`], for frameworks built on the `http` crate's types
    /// (axum, hyper, ...): [`respond`](Self::respond) for `GET` and `HEAD` (without a body),
    /// `405` for other methods.
    pub async fn http<B>(&self, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
        let method = request.method();
        let answer = if method == http::Method::GET || method == http::Method::HEAD {
            self.respond(request.uri().path()).await
        } else {
            EndpointResponse {
                status: 405,
                content_type: "text/plain; charset=utf-8",
                body: "only GET and HEAD are answered\n".to_owned(),
            }
        };
        let body = if method == http::Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(answer.body)
        };
        let mut response = http::Response::new(Full::new(body));
        *response.status_mut() =
            http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::OK);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(answer.content_type),
        );
        if method == http::Method::GET || method == http::Method::HEAD {
            return response;
        }
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        response
    }
}
