//! The rows of the comparison table: which load's report and metric each shows.

/// One headline row: which load's report, which metric, how to label it.
pub(super) struct Row {
    pub(super) load: &'static str,
    /// The metric shown; `None`: the error count.
    pub(super) metric: Option<&'static str>,
    pub(super) label: &'static str,
    /// Instead of `metric`: CPU seconds spent during the load (written by compare.sh as
    /// `<target>.<load>.<file>`) divided by this count metric, in µs per unit.
    pub(super) cpu_per: Option<(Cpu, &'static str)>,
}

/// Whose CPU a row shows. The load client and the nodes share the machine with the proxy, so
/// their share bounds what any proxy's own savings can do to a rate: a reader needs all three.
#[derive(Clone, Copy)]
pub(super) enum Cpu {
    /// The proxy, user + kernel (`.cpu`).
    Proxy,
    /// The proxy's kernel time alone (`.syscpu`): socket work any proxy pays the same.
    ProxyKernel,
    /// The load generator and the two nodes together (`.othercpu`).
    Others,
}

impl Cpu {
    pub(super) fn file(self) -> &'static str {
        match self {
            Cpu::Proxy => "cpu",
            Cpu::ProxyKernel => "syscpu",
            Cpu::Others => "othercpu",
        }
    }
}

pub(super) const ROWS: &[Row] = &[
    Row {
        load: "ws-connect",
        metric: Some("conn_per_s"),
        label: "TLS WebSocket connects/s",
        cpu_per: None,
    },
    Row {
        load: "ws-connect",
        metric: Some("connect_p99_ms"),
        label: "connect p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-connect",
        metric: Some("first_msg_p50_ms"),
        label: "first message of a fresh connection p50 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-connect",
        metric: Some("first_msg_p99_ms"),
        label: "first message of a fresh connection p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-connect",
        metric: None,
        label: "connect errors",
        cpu_per: None,
    },
    Row {
        load: "ws-connect",
        metric: None,
        label: "proxy CPU per connect (µs)",
        cpu_per: Some((Cpu::Proxy, "connections_ok")),
    },
    Row {
        load: "ws-connect",
        metric: None,
        label: "… of it in the kernel (µs)",
        cpu_per: Some((Cpu::ProxyKernel, "connections_ok")),
    },
    Row {
        load: "ws-connect",
        metric: None,
        label: "load client + nodes CPU per connect (µs)",
        cpu_per: Some((Cpu::Others, "connections_ok")),
    },
    Row {
        load: "ws-reconnect",
        metric: Some("conn_per_s"),
        label: "TLS WebSocket reconnects/s (resumed)",
        cpu_per: None,
    },
    Row {
        load: "ws-reconnect",
        metric: Some("resumed"),
        label: "reconnects that resumed",
        cpu_per: None,
    },
    Row {
        load: "ws-reconnect",
        metric: None,
        label: "reconnect errors",
        cpu_per: None,
    },
    Row {
        load: "ws-reconnect",
        metric: None,
        label: "proxy CPU per reconnect (µs)",
        cpu_per: Some((Cpu::Proxy, "connections_ok")),
    },
    Row {
        load: "ws-echo",
        metric: Some("msgs_per_s"),
        label: "WebSocket echo msgs/s",
        cpu_per: None,
    },
    Row {
        load: "ws-echo",
        metric: Some("rtt_p99_ms"),
        label: "echo RTT p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-echo",
        metric: Some("rtt_p999_ms"),
        label: "echo RTT p99.9 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-echo",
        metric: None,
        label: "echo errors",
        cpu_per: None,
    },
    Row {
        load: "ws-echo",
        metric: None,
        label: "proxy CPU per echo message (µs)",
        cpu_per: Some((Cpu::Proxy, "messages_ok")),
    },
    Row {
        load: "ws-echo",
        metric: None,
        label: "… of it in the kernel (µs)",
        cpu_per: Some((Cpu::ProxyKernel, "messages_ok")),
    },
    Row {
        load: "ws-echo",
        metric: None,
        label: "load client + nodes CPU per echo message (µs)",
        cpu_per: Some((Cpu::Others, "messages_ok")),
    },
    Row {
        load: "ws-echo-long",
        metric: Some("msgs_per_s"),
        label: "WebSocket echo msgs/s, long run",
        cpu_per: None,
    },
    Row {
        load: "ws-echo-long",
        metric: Some("rtt_p99_ms"),
        label: "long-run echo RTT p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-echo-long",
        metric: Some("rtt_p999_ms"),
        label: "long-run echo RTT p99.9 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-echo-long",
        metric: None,
        label: "long-run echo errors",
        cpu_per: None,
    },
    Row {
        load: "ws-echo-long",
        metric: None,
        label: "proxy CPU per echo message, long run (µs)",
        cpu_per: Some((Cpu::Proxy, "messages_ok")),
    },
    Row {
        load: "ws-rate",
        metric: Some("offered_msgs_per_s"),
        label: "open-loop echo: offered msgs/s",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("rtt_p50_ms"),
        label: "open-loop echo RTT p50 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("rtt_p99_ms"),
        label: "open-loop echo RTT p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("rtt_p999_ms"),
        label: "open-loop echo RTT p99.9 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("rtt_max_ms"),
        label: "open-loop echo RTT max (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("lost"),
        label: "open-loop echo: replies lost",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: Some("max_sustained_msgs_per_s"),
        label: "highest echo msgs/s with p99 under the SLO",
        cpu_per: None,
    },
    Row {
        load: "ws-rate",
        metric: None,
        label: "proxy CPU per open-loop message (µs)",
        cpu_per: Some((Cpu::Proxy, "messages_ok")),
    },
    Row {
        load: "ws-room",
        metric: Some("rtt_p99_ms"),
        label: "room-of-8 broadcast RTT p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-room",
        metric: Some("rtt_p999_ms"),
        label: "room-of-8 broadcast RTT p99.9 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-room",
        metric: Some("fanout_per_s"),
        label: "room-of-8 fan-out msgs/s delivered",
        cpu_per: None,
    },
    Row {
        load: "ws-room",
        metric: Some("lost"),
        label: "room-of-8: own messages lost",
        cpu_per: None,
    },
    Row {
        load: "ws-storm",
        metric: Some("all_back_s"),
        label: "reconnect storm: all back (s)",
        cpu_per: None,
    },
    Row {
        load: "ws-storm",
        metric: Some("reconnect_p99_ms"),
        label: "reconnect storm: reconnect p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-storm",
        metric: Some("refused"),
        label: "reconnect storm: refused",
        cpu_per: None,
    },
    Row {
        load: "ws-storm",
        metric: Some("timed_out"),
        label: "reconnect storm: timed out",
        cpu_per: None,
    },
    Row {
        load: "ws-storm",
        metric: Some("retries"),
        label: "reconnect storm: retries",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("all_back_s"),
        label: "resumed storm: all back (s)",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("reconnect_p99_ms"),
        label: "resumed storm: reconnect p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("resumed"),
        label: "resumed storm: sessions resumed",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("refused"),
        label: "resumed storm: refused",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("timed_out"),
        label: "resumed storm: timed out",
        cpu_per: None,
    },
    Row {
        load: "ws-storm-resume",
        metric: Some("retries"),
        label: "resumed storm: retries",
        cpu_per: None,
    },
    Row {
        load: "ws-idle",
        metric: Some("kib_per_conn"),
        label: "KiB per idle WebSocket",
        cpu_per: None,
    },
    Row {
        load: "ws-idle",
        metric: Some("connections_held"),
        label: "idle connections held",
        cpu_per: None,
    },
    Row {
        load: "http",
        metric: Some("req_per_s"),
        label: "HTTPS keep-alive req/s",
        cpu_per: None,
    },
    Row {
        load: "http",
        metric: Some("latency_p99_ms"),
        label: "HTTPS p99 (ms)",
        cpu_per: None,
    },
    Row {
        load: "http",
        metric: None,
        label: "http errors",
        cpu_per: None,
    },
    Row {
        load: "http",
        metric: None,
        label: "proxy CPU per HTTPS request (µs)",
        cpu_per: Some((Cpu::Proxy, "requests_ok")),
    },
    Row {
        load: "http",
        metric: None,
        label: "… of it in the kernel (µs)",
        cpu_per: Some((Cpu::ProxyKernel, "requests_ok")),
    },
    Row {
        load: "http",
        metric: None,
        label: "load client + nodes CPU per HTTPS request (µs)",
        cpu_per: Some((Cpu::Others, "requests_ok")),
    },
];
