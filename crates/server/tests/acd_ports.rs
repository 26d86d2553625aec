//! The engine running out of RTP ports while offering a caller to an agent: that is the
//! engine's failure, not the agent's. The caller leaves the queue (`acd.abandoned` `reason:
//! "engine"`, the step's `on_failure` runs), no refusal is charged to the agent (with
//! `max_no_answer = 1` one would pause it) and the agent stays available.
//!
//! Ports: SIP 44095, SIPp 44096-44097 (media 44086-44089), RTP 44098-44099 (one call leg).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Dirs, Server, of_type, queue_plan, scenario, sipp, test_dir};

const CONFIG: &str = "[sip]\nauth_algorithms = [\"MD5\"]\n[acd]\noffer_timeout_s = 10.0\n\
    max_no_answer = 1\n[[acd.queues]]\nid = 1\nname = \"general\"\nwrap_up_s = 30.0\n\
    [[agents.agent]]\nid = \"a1\"\nusername = \"agent1\"\npassword = \"secret-1\"\n\
    queues = [\"general\"]\nauto_login = true\n";

#[test]
fn no_rtp_port_for_the_agent_leg_abandons_the_caller_without_charging_the_agent() {
    let plans = test_dir("acd-ports-plans");
    std::fs::write(plans.join("acd.toml"), queue_plan("acd-ports")).unwrap();
    // One even RTP port: the caller's leg takes it, the agent's leg finds none.
    let server = Server::start_with(
        "acd-ports",
        44095,
        (44098, 44099),
        CONFIG,
        Dirs {
            dialplans: plans,
            data: None,
        },
    );
    sipp(
        &server,
        44096,
        44086,
        &[
            "-sf",
            &scenario("register.xml"),
            "-s",
            "agent1",
            "-au",
            "agent1",
            "-ap",
            "secret-1",
            "-key",
            "expires",
            "300",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.registered" && e["agent"] == "a1"
    });
    // The engine hangs up after the on_failure step: a caller that waits for the BYE.
    sipp(
        &server,
        44097,
        44088,
        &[
            "-sf",
            &scenario("uac-wait-bye.xml"),
            "-s",
            "5000",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(10), |e| e["type"] == "ivr.ended");
    let events = server.events();
    let offered = of_type(&events, "acd.offered");
    assert_eq!(offered.len(), 1, "one offer: {offered:?}");
    assert_eq!(offered[0]["agent"], "a1");
    let abandoned = of_type(&events, "acd.abandoned");
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0]["reason"], "engine");
    assert!(
        of_type(&events, "acd.refused").is_empty(),
        "no refusal charged to the agent"
    );
    let states: Vec<&str> = of_type(&events, "agent.state")
        .iter()
        .filter(|e| e["agent"] == "a1")
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert!(!states.contains(&"paused"), "agent not paused: {states:?}");
    assert_eq!(
        states.last(),
        Some(&"available"),
        "the agent is available again: {states:?}"
    );
    assert!(
        of_type(&events, "ivr.say")
            .iter()
            .any(|e| e["text"] == "Nobody is here."),
        "the on_failure step spoke"
    );
}
