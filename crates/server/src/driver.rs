//! The tokio driver: owns the SIP sockets (UDP and TCP on one address) and the timers, and
//! moves bytes between them and the sans-IO user agent.
//!
//! One task owns the [`UserAgent`] and the [`CallApp`]; nothing on the per-message path takes a
//! lock. TCP connections are tasks of their own that frame the byte stream and hand complete
//! messages to the SIP task over a channel; responses go back over a per-connection channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use frontdoor_sip::framing::StreamFramer;
use frontdoor_sip::{Transmit, Transport, UaConfig, UserAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::agents::Agents;
use crate::calls::{AppNote, CallApp, IvrSetup, Originate};
use crate::config::{Config, DB_FILE};
use crate::events::{EventBody, EventSink};
use crate::media::MediaEngine;
use crate::plans::{Plans, Reloader};
use crate::ports::PortPool;
use crate::store::StoreThread;
use crate::tts::{Tts, TtsPool};

/// Most datagrams read in one go before the loop looks at its other inputs.
const BATCH: usize = 256;
/// How long shutdown waits for calls to end after hanging them up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A socket could not be opened.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// UDP or TCP.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The media engine could not start.
    #[error("cannot start the media engine: {0}")]
    Media(std::io::Error),
    /// The store or the IVR's threads could not start.
    #[error("cannot start the IVR: {0}")]
    Ivr(String),
    /// The registrar could not be set up.
    #[error("cannot start the registrar: {0}")]
    Agents(String),
    /// `frontdoor call`: the call failed (not answered, not bridged, ...).
    #[error("call failed: {0}")]
    Call(String),
}

/// What `frontdoor serve` runs with.
#[derive(Debug)]
pub struct ServeOptions {
    /// SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// The configuration.
    pub config: Arc<Config>,
    /// RTP port ranges (inclusive), used in this order.
    pub rtp_ports: Vec<(u16, u16)>,
    /// Where events go.
    pub events: EventSink,
    /// Prompts, decoded and pre-encoded.
    pub prompts: Arc<frontdoor_media::prompt::PromptLibrary>,
    /// Directory the prompts came from.
    pub prompt_dir: std::path::PathBuf,
    /// The dialplans, validated and ready.
    pub plans: Arc<Plans>,
    /// Speech.
    pub tts: Arc<Tts>,
    /// Data directory (SQLite, recordings).
    pub data_dir: std::path::PathBuf,
    /// `frontdoor call`: place this call at start and stop when it is over.
    pub originate: Option<Originate>,
    /// Live feed of the event stream (the agent API's WebSocket), when `[api] listen` is set.
    pub event_feed: Option<crate::events::EventFeed>,
}

/// The recogniser pool, when a dialplan has speech steps and the model loads; otherwise a
/// warning (speech steps then fall back to keys) and `None`.
fn start_recognizers(
    config: &Config,
    plans: &Plans,
    app_tx: &mpsc::UnboundedSender<AppNote>,
) -> Option<crate::speech::RecognizerPool> {
    if !plans.has_speech_steps() {
        return None;
    }
    let path = config.speech.model.as_ref().map_or_else(
        || frontdoor_speech::models_dir().join(frontdoor_speech::TINY_EN),
        std::path::PathBuf::from,
    );
    let model = crate::speech::load_model(&path)
        .map_err(|e| tracing::warn!("{e}"))
        .ok()?;
    let tx = app_tx.clone();
    crate::speech::RecognizerPool::start(&model, config.speech.pool(), move |d| {
        let _ = tx.send(AppNote::Recognized(Box::new(d)));
    })
    .map_err(|e| tracing::warn!("speech recognition is off: {e}; speech steps fall back to keys"))
    .ok()
}

enum TcpEvent {
    /// A connection is up; send its messages to `writer`.
    Connected {
        peer: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    /// A complete message from `peer`.
    Message { peer: SocketAddr, data: Bytes },
    /// The connection closed.
    Closed { peer: SocketAddr },
}

fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
        tracing::warn!(error = %e, "cannot set UDP receive buffer");
    }
    let _ = socket.set_send_buffer_size(recv_buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Reads the host's UDP `RcvbufErrors` counter from `/proc/net/snmp` (0 when unavailable).
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Runs the server until SIGINT/SIGTERM, then ends the calls and returns.
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let ServeOptions {
        sip,
        config,
        rtp_ports,
        events,
        prompts,
        prompt_dir,
        plans,
        tts,
        data_dir,
        originate,
        event_feed,
    } = opts;
    let udp = bind_udp(sip, config.sip.udp_recv_buffer).map_err(|source| ServeError::Bind {
        what: "UDP",
        addr: sip,
        source,
    })?;
    // TCP on the port UDP got (they differ only when the port asked for is 0).
    let tcp_addr = udp.local_addr().unwrap_or(sip);
    let tcp = TcpListener::bind(tcp_addr)
        .await
        .map_err(|source| ServeError::Bind {
            what: "TCP",
            addr: sip,
            source,
        })?;
    let local = udp.local_addr().unwrap_or(sip);

    let public_ip = config.media.public_address.unwrap_or(local.ip());
    let ua_config = UaConfig {
        t1: config.sip.t1(),
        t2: config.sip.t2(),
        t4: config.sip.t4(),
        local_addr: SocketAddr::new(public_ip, local.port()),
        contact_host: public_ip.to_string(),
        user_agent: config.sip.user_agent.clone(),
        max_message_size: config.sip.max_message_size,
        mtu: config.sip.mtu,
        session_expires: (config.sip.session_expires > 0).then_some(config.sip.session_expires),
        min_se: config.sip.min_se,
    };
    let mut ua = UserAgent::new(ua_config);
    // Agents' phones REGISTER here (digest-authenticated against [[agents.agent]]).
    ua.set_accept_register(true);
    let mut agents =
        Agents::new(&config, events.clone(), Instant::now()).map_err(ServeError::Agents)?;
    let threads = match config.media.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (media_tx, mut media_rx) = mpsc::unbounded_channel();
    let media = MediaEngine::start(threads, media_tx).map_err(ServeError::Media)?;
    let (app_tx, mut app_rx) = mpsc::unbounded_channel::<AppNote>();
    let region = config
        .store
        .region()
        .map_err(|e| ServeError::Ivr(e.to_string()))?;
    let store_tx = app_tx.clone();
    let store = StoreThread::start(&data_dir.join(DB_FILE), region, move |r| {
        let _ = store_tx.send(AppNote::Store(r));
    })
    .map_err(ServeError::Ivr)?;
    let tts_tx = app_tx.clone();
    let tts_pool = TtsPool::start(tts.clone(), config.ivr.tts_threads, move |r| {
        let _ = tts_tx.send(AppNote::Rendered(r));
    })
    .map_err(|e| ServeError::Ivr(e.to_string()))?;
    let asr = start_recognizers(&config, &plans, &app_tx);
    let (reload_wake, reload_rx) = std::sync::mpsc::channel::<()>();
    let reloader = Reloader {
        interval: (config.ivr.reload_interval_ms > 0)
            .then(|| Duration::from_millis(config.ivr.reload_interval_ms)),
        prompt_dir,
        library: prompts.clone(),
        tts: tts.clone(),
        threads: config.ivr.tts_threads,
    };
    let reload_set = plans.set.clone();
    let reload_tx = app_tx.clone();
    std::thread::Builder::new()
        .name("dialplan-reload".into())
        .spawn(move || {
            reloader.run(reload_set, reload_rx, |n| {
                let _ = reload_tx.send(AppNote::Reload(n));
            })
        })
        .map_err(|e| ServeError::Ivr(e.to_string()))?;
    drop(app_tx);
    events.emit(
        None,
        EventBody::DialplanLoaded {
            version: plans.version,
            dialplans: plans.names(),
        },
    );
    let ivr = IvrSetup {
        plans,
        tts,
        tts_pool,
        store,
        recordings: data_dir.join("recordings"),
        asr,
    };
    let mut app = CallApp::new(
        config.clone(),
        public_ip,
        local.ip(),
        PortPool::with_ranges(&rtp_ports),
        events.clone(),
        media,
        prompts,
        ivr,
    );
    // Callbacks waiting from before (even a SIGKILL): interrupted attempts are recovered and
    // the pending ones rejoin their queues at their original enqueue times. The desk's clock
    // starts before the oldest so their times keep their order.
    let pending = if config.acd.is_some() {
        frontdoor_store::SqliteStore::open(&data_dir.join(DB_FILE))
            .map_err(|e| e.to_string())
            .and_then(|s| crate::calls::callbacks::load_pending(&s))
            .map_err(|e| ServeError::Ivr(format!("callbacks: {e}")))?
    } else {
        Vec::new()
    };
    let now = Instant::now();
    let epoch = pending
        .iter()
        .map(|(c, _)| c.enqueued_at)
        .min()
        .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
        .and_then(|age| now.checked_sub(age + Duration::from_secs(1)))
        .unwrap_or(now);
    // The ACD (`[acd]`) with its agents; `auto_login` agents are logged in now.
    match crate::desk::Desk::from_config(&config, epoch) {
        Ok(Some(desk)) => app.set_desk(desk),
        Ok(None) => {}
        Err(e) => return Err(ServeError::Agents(e)),
    }
    if !pending.is_empty() {
        tracing::info!(callbacks = pending.len(), "pending callbacks back in line");
        app.restore_callbacks(Instant::now(), pending);
    }
    // The screen-pop webhook: deliveries run on this runtime, outcomes become events.
    if let Some(url) = &config.screenpop.url {
        let sp = &config.screenpop;
        let cfg = crate::screenpop::WebhookConfig {
            url: url.clone(),
            secret: sp.secret.as_bytes().into(),
            attempts: sp.attempts.max(1),
            backoff: Duration::from_millis(sp.backoff_ms),
            timeout: Duration::from_secs(sp.timeout_s.max(1)),
            queue: 1024,
        };
        let sink = events.clone();
        let webhook = crate::screenpop::Webhook::start(cfg, move |d| {
            let (call_id, body) = match d {
                crate::screenpop::Delivery::Delivered {
                    call_id,
                    attempts,
                    status,
                } => (call_id, EventBody::ScreenPopDelivered { attempts, status }),
                crate::screenpop::Delivery::Failed {
                    call_id,
                    attempts,
                    error,
                } => (call_id, EventBody::ScreenPopFailed { attempts, error }),
            };
            sink.emit(Some(&Arc::from(call_id)), body);
        })
        .map_err(|e| ServeError::Agents(format!("[screenpop] url: {e}")))?;
        app.set_webhook(webhook);
    }
    // The agent API: its requests reach the desk through this channel.
    let (desk_tx, mut desk_rx) = mpsc::channel::<crate::desk::DeskRequest>(256);
    if let (Some(addr), Some(feed)) = (config.api.listen, event_feed) {
        let state = crate::api::ApiState::new(config.api.keys.clone(), desk_tx.clone(), feed);
        let bound = crate::api::serve(addr, state)
            .await
            .map_err(|e| ServeError::Agents(format!("[api] listen {addr}: {e}")))?;
        tracing::info!(api = %bound, "agent API listening");
    }

    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(4096);
    let max_msg = config.sip.max_message_size;
    let acceptor = tokio::spawn(accept_loop(tcp, tcp_tx.clone(), max_msg));
    let mut tcp_writers: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tcp_pending: HashMap<SocketAddr, Vec<Bytes>> = HashMap::new();

    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;

    let rcvbuf_at_start = udp_rcvbuf_errors();
    events.emit(
        None,
        EventBody::ServerStarted {
            sip: local.to_string(),
            rtp_ports: rtp_ports
                .iter()
                .map(|(lo, hi)| format!("{lo}-{hi}"))
                .collect::<Vec<_>>()
                .join(","),
            version: env!("CARGO_PKG_VERSION"),
        },
    );
    tracing::info!(sip = %local, rtp = ?rtp_ports, "frontdoor listening (UDP and TCP)");

    let backlog_batches = (config.overload.backlog_datagrams as usize)
        .div_ceil(BATCH)
        .max(2);
    let mut full_batches = 0usize;
    let mut shedding_since: Option<Instant> = None;
    let mut stopping_at: Option<Instant> = None;
    let mut buf = vec![0u8; 65_536];

    let originating = originate.is_some();
    if let Some(o) = originate {
        app.originate(Instant::now(), &mut ua, o);
        pump(
            &mut ua,
            &mut app,
            &mut agents,
            &udp,
            &mut tcp_writers,
            &mut tcp_pending,
            &tcp_tx,
            max_msg,
        )
        .await;
    }
    let mut outcome: Option<Result<(), String>> = None;

    loop {
        let now = Instant::now();
        if originating && stopping_at.is_none() {
            if let Some(o) = app.originate_outcome() {
                outcome = Some(o);
                begin_shutdown(&mut stopping_at, &mut ua, &mut app, &events, &config);
            }
        }
        if let Some(at) = stopping_at {
            if (app.active_calls() == 0 && app.media_draining() == 0) || now >= at + SHUTDOWN_GRACE
            {
                break;
            }
        }
        let deadline = [ua.poll_timeout(), app.poll_timeout(), agents.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let sleep_until = deadline.unwrap_or(now + Duration::from_millis(250));
        let sleep_until = match stopping_at {
            Some(at) => sleep_until.min(at + SHUTDOWN_GRACE),
            None => sleep_until,
        };

        tokio::select! {
            biased;
            Some(req) = desk_rx.recv() => {
                app.serve_desk(Instant::now(), req);
            }
            _ = sigterm.recv(), if stopping_at.is_none() => {
                begin_shutdown(&mut stopping_at, &mut ua, &mut app, &events, &config);
            }
            _ = sigint.recv(), if stopping_at.is_none() => {
                begin_shutdown(&mut stopping_at, &mut ua, &mut app, &events, &config);
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: checking the dialplans");
                let _ = reload_wake.send(());
            }
            Some(note) = app_rx.recv() => {
                let now = Instant::now();
                app.handle_note(now, &mut ua, note);
                while let Ok(note) = app_rx.try_recv() {
                    app.handle_note(now, &mut ua, note);
                }
            }
            ready = udp.readable() => {
                if let Err(e) = ready {
                    tracing::warn!(error = %e, "UDP socket error");
                    continue;
                }
                let mut n = 0;
                while n < BATCH {
                    match udp.try_recv_from(&mut buf) {
                        Ok((len, src)) => {
                            n += 1;
                            if let Some(data) = buf.get(..len) {
                                ua.handle_datagram(Instant::now(), Transport::Udp, src, data);
                            }
                            if n % 32 == 0 {
                                pump(&mut ua, &mut app, &mut agents, &udp, &mut tcp_writers, &mut tcp_pending, &tcp_tx, max_msg).await;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP port unreachable and friends: not fatal for a UDP server.
                            tracing::debug!(error = %e, "UDP receive error");
                            break;
                        }
                    }
                }
                // Overload: the socket stays full batch after batch.
                if n == BATCH {
                    full_batches += 1;
                } else {
                    full_batches = 0;
                }
                let now = Instant::now();
                if full_batches >= backlog_batches && shedding_since.is_none() && stopping_at.is_none() {
                    tracing::warn!("overload: shedding new calls with 503");
                    ua.set_shedding(Some(config.overload.retry_after_s));
                    shedding_since = Some(now);
                } else if let Some(since) = shedding_since {
                    // The backlog is gone: accept again at once, so a short stall sheds
                    // only the calls that arrived while the socket was really behind.
                    if full_batches == 0 && stopping_at.is_none() {
                        tracing::info!(
                            shed_for_ms = now.duration_since(since).as_millis(),
                            "overload over: accepting new calls"
                        );
                        ua.set_shedding(None);
                        shedding_since = None;
                    }
                }
            }
            Some(note) = media_rx.recv() => {
                let now = Instant::now();
                app.handle_media(now, &mut ua, note);
                while let Ok(note) = media_rx.try_recv() {
                    app.handle_media(now, &mut ua, note);
                }
            }
            Some(ev) = tcp_rx.recv() => {
                match ev {
                    TcpEvent::Connected { peer, writer } => {
                        if let Some(pending) = tcp_pending.remove(&peer) {
                            for m in pending {
                                let _ = writer.try_send(m);
                            }
                        }
                        tcp_writers.insert(peer, writer);
                    }
                    TcpEvent::Message { peer, data } => {
                        ua.handle_datagram(Instant::now(), Transport::Tcp, peer, &data);
                    }
                    TcpEvent::Closed { peer } => {
                        tcp_writers.remove(&peer);
                        tcp_pending.remove(&peer);
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until.into()) => {
                let now = Instant::now();
                ua.handle_timeout(now);
                app.handle_timeout(now, &mut ua);
                agents.handle_timeout(now);
            }
        }
        pump(
            &mut ua,
            &mut app,
            &mut agents,
            &udp,
            &mut tcp_writers,
            &mut tcp_pending,
            &tcp_tx,
            max_msg,
        )
        .await;
    }

    acceptor.abort();
    drop(reload_wake);
    // Pending store work (call records, recordings of the calls just ended) is written first.
    while let Ok(note) = media_rx.try_recv() {
        app.handle_media(Instant::now(), &mut ua, note);
    }
    let total_calls = app.total_calls();
    // Stopped by a signal: the outcome of what happened before it (answered or not).
    let outcome = outcome.or_else(|| app.originate_outcome());
    app.finish();
    let rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(rcvbuf_at_start);
    let stats = ua.stats();
    tracing::info!(
        calls = total_calls,
        udp_rcvbuf_errors = rcvbuf_errors,
        stats = ?stats,
        events_dropped = events.dropped(),
        "frontdoor stopped"
    );
    events.emit(
        None,
        EventBody::ServerStopped {
            calls_total: total_calls,
            udp_rcvbuf_errors: rcvbuf_errors,
        },
    );
    match (originating, outcome) {
        (false, _) | (true, Some(Ok(()))) => Ok(()),
        (true, Some(Err(why))) => Err(ServeError::Call(why)),
        (true, None) => Err(ServeError::Call("interrupted".to_owned())),
    }
}

fn begin_shutdown(
    stopping_at: &mut Option<Instant>,
    ua: &mut UserAgent,
    app: &mut CallApp,
    events: &EventSink,
    config: &Config,
) {
    let now = Instant::now();
    tracing::info!(
        active_calls = app.active_calls(),
        "shutting down: ending calls"
    );
    events.emit(
        None,
        EventBody::ServerStopping {
            active_calls: app.active_calls(),
        },
    );
    ua.set_shedding(Some(config.overload.retry_after_s));
    app.hangup_all(now, ua);
    *stopping_at = Some(now);
}

/// Moves the UA's events to the application and its transmits to the sockets.
#[allow(clippy::too_many_arguments)]
async fn pump(
    ua: &mut UserAgent,
    app: &mut CallApp,
    agents: &mut Agents,
    udp: &UdpSocket,
    tcp_writers: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    tcp_pending: &mut HashMap<SocketAddr, Vec<Bytes>>,
    tcp_tx: &mpsc::Sender<TcpEvent>,
    max_msg: usize,
) {
    loop {
        let mut progressed = false;
        while let Some(ev) = ua.poll_event() {
            progressed = true;
            let now = Instant::now();
            if let Some(ev) = agents.handle_event(now, ua, ev) {
                match agents.take_feature(&ev) {
                    Some((agent, op)) => app.feature_call(now, ua, ev, &agent, op),
                    None => app.handle_event(now, ua, ev),
                }
            }
        }
        // What the ACD decided meanwhile (offers place calls: their INVITEs go out below).
        app.run_desk(Instant::now(), ua, agents);
        while let Some(t) = ua.poll_transmit() {
            progressed = true;
            send(t, udp, tcp_writers, tcp_pending, tcp_tx, max_msg).await;
        }
        if !progressed {
            break;
        }
    }
    // One wake-up per worker for everything this batch queued.
    app.flush_media();
}

async fn send(
    t: Transmit,
    udp: &UdpSocket,
    tcp_writers: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    tcp_pending: &mut HashMap<SocketAddr, Vec<Bytes>>,
    tcp_tx: &mpsc::Sender<TcpEvent>,
    max_msg: usize,
) {
    match t.transport {
        Transport::Udp => match udp.try_send_to(&t.payload, t.destination) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = udp.send_to(&t.payload, t.destination).await {
                    tracing::debug!(error = %e, to = %t.destination, "UDP send failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, to = %t.destination, "UDP send failed"),
        },
        Transport::Tcp => {
            if let Some(w) = tcp_writers.get(&t.destination) {
                if w.try_send(t.payload).is_err() {
                    tracing::warn!(to = %t.destination, "TCP connection backlogged or closed; message dropped");
                }
                return;
            }
            let first = !tcp_pending.contains_key(&t.destination);
            tcp_pending
                .entry(t.destination)
                .or_default()
                .push(t.payload);
            if first {
                tokio::spawn(connect(t.destination, tcp_tx.clone(), max_msg));
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<TcpEvent>, max_msg: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, peer, tx.clone(), max_msg));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connect(peer: SocketAddr, tx: mpsc::Sender<TcpEvent>, max_msg: usize) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            connection(stream, peer, tx, max_msg).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TCP connect failed");
            let _ = tx.send(TcpEvent::Closed { peer }).await;
        }
        Err(_) => {
            tracing::debug!(%peer, "TCP connect timed out");
            let _ = tx.send(TcpEvent::Closed { peer }).await;
        }
    }
}

/// One TCP connection: frames inbound bytes into messages, writes outbound ones.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<TcpEvent>,
    max_msg: usize,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Bytes>(1024);
    if tx
        .send(TcpEvent::Connected { peer, writer: wtx })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = wrx.recv().await {
            if wr.write_all(&m).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new(max_msg);
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(buf.get(..n).unwrap_or_default());
        loop {
            match framer.next_message() {
                Some(Ok(data)) => {
                    if tx.send(TcpEvent::Message { peer, data }).await.is_err() {
                        break 'read;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TCP framing error; closing");
                    break 'read;
                }
                None => break,
            }
        }
    }
    writer.abort();
    let _ = tx.send(TcpEvent::Closed { peer }).await;
}
