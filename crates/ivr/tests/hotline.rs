#![allow(clippy::unwrap_used, missing_docs)]
use std::path::Path;

use frontdoor_ivr::*;

fn dialplans_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")
}

#[test]
fn hotline_validates() {
    match check_dir(&dialplans_dir(), None) {
        Ok(plans) => {
            assert!(plans.iter().any(|p| p.plan.name == "hotline"));
            for p in &plans {
                assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            }
        }
        Err(d) => panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn docs_example_validates() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dialplans.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    if let Err(d) = check_str(Path::new("docs-example.toml"), &doc[start..end], None) {
        panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// No maze: every hotline menu offers "0", and no menu is more than three menus deep.
#[test]
fn hotline_every_menu_has_zero_and_depth_is_at_most_three() {
    use frontdoor_ivr::model::Verb;
    use std::collections::{HashMap, VecDeque};
    let loaded = check_file(&dialplans_dir().join("hotline.toml"), None).unwrap();
    let flow = loaded.plan.flow(&FlowId("hotline".into())).unwrap();
    // Shared exits (busy / after hours / anything else / language) are not levels.
    let exits = ["language", "anything_else", "agents_busy", "after_hours"];
    let mut depth: HashMap<StepId, usize> = HashMap::new();
    let mut queue = VecDeque::from([(flow.start.clone(), 0usize)]);
    while let Some((id, d)) = queue.pop_front() {
        if depth.get(&id).is_some_and(|&old| old <= d) {
            continue;
        }
        depth.insert(id.clone(), d);
        let step = &flow.steps[&id];
        let is_level = matches!(step.verb, Verb::Menu(_)) && !exits.contains(&id.as_str());
        if let Verb::Menu(m) = &step.verb {
            assert!(m.options.contains_key(&'0'), "menu `{id}` has no 0 option");
        }
        let d2 = d + usize::from(is_level);
        assert!(d2 <= 3, "`{id}` is {d2} menus deep");
        let mut next: Vec<StepId> = step.next.iter().cloned().collect();
        match &step.verb {
            Verb::Menu(m) => next.extend(m.options.values().cloned().chain(m.fallback.clone())),
            Verb::Gather(g) => next.extend(g.on_failure.clone()),
            Verb::If {
                then, otherwise, ..
            } => next.extend([then.clone()].into_iter().chain(otherwise.clone())),
            Verb::Enqueue(e) => next.extend(e.on_failure.clone()),
            _ => {}
        }
        for n in next {
            queue.push_back((n, d2));
        }
    }
    assert_eq!(depth.len(), flow.steps.len());
}
