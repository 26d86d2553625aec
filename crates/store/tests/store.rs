#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use frontdoor_store::*;

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("frontdoor-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn n(s: &str, r: Region) -> Result<String, NumberError> {
    normalize(s, r).map(|e| e.as_str().to_owned())
}

#[test]
fn normalises_nanp_uk_china_and_international() {
    use Region::*;
    assert_eq!(n("(212) 555-0100", Nanp).unwrap(), "+12125550100");
    assert_eq!(n("1-212-555-0100", Nanp).unwrap(), "+12125550100");
    assert_eq!(n("+1 212 555 0100", Gb).unwrap(), "+12125550100");
    assert_eq!(n("011 44 20 7946 0018", Nanp).unwrap(), "+442079460018");
    assert_eq!(n("020 7946 0018", Gb).unwrap(), "+442079460018");
    assert_eq!(n("07700 900123", Gb).unwrap(), "+447700900123");
    assert_eq!(n("0044 7700 900123", Cn).unwrap(), "+447700900123");
    assert_eq!(n("138 0013 8000", Cn).unwrap(), "+8613800138000");
    assert_eq!(n("010-6552-9988", Cn).unwrap(), "+861065529988");
    assert_eq!(n("0755 8888 9999", Cn).unwrap(), "+8675588889999");
    assert_eq!(
        n("sip:+8613800138000@carrier.example;user=phone", Nanp).unwrap(),
        "+8613800138000"
    );
    assert_eq!(n("tel:+33 1 23 45 67 89", Nanp).unwrap(), "+33123456789");
    assert_eq!(n("", Nanp), Err(NumberError::Empty));
    assert_eq!(n("abc", Nanp), Err(NumberError::NotDigits));
    assert_eq!(n("555-0100", Nanp), Err(NumberError::BadLength));
    assert_eq!(n("(112) 555-0100", Nanp), Err(NumberError::BadFormat));
    assert_eq!(n("7946 0018", Gb), Err(NumberError::BadFormat));
    assert_eq!(n("+44 020 7946 0018", Gb), Err(NumberError::BadFormat));
    assert_eq!(n("+86 138 0013 800", Gb), Err(NumberError::BadLength));
    assert_eq!(Region::from_code("uk"), Some(Region::Gb));
}

#[test]
fn identification_rules() {
    let r = Region::Nanp;
    let info = |from: &str, pai: Option<&str>, privacy: Option<&str>, trusted: bool| CallerInfo {
        from_user: from.into(),
        asserted_user: pai.map(Into::into),
        privacy: privacy.map(Into::into),
        trusted_source: trusted,
    };
    let num = |s: &str| CallerIdentity::Number(normalize(s, r).unwrap());
    assert_eq!(
        identify(&info("2125550100", None, None, false), r),
        num("+12125550100")
    );
    // PAI only from a trusted trunk.
    assert_eq!(
        identify(&info("2125550100", Some("+8613800138000"), None, true), r),
        num("+8613800138000")
    );
    assert_eq!(
        identify(&info("2125550100", Some("+8613800138000"), None, false), r),
        num("+12125550100")
    );
    // Withheld / anonymous / invalid.
    assert_eq!(
        identify(
            &info("2125550100", Some("+8613800138000"), Some("id"), true),
            r
        ),
        CallerIdentity::Anonymous
    );
    assert_eq!(
        identify(&info("2125550100", None, Some("user; critical"), false), r),
        CallerIdentity::Anonymous
    );
    assert_eq!(
        identify(&info("Anonymous", None, None, false), r),
        CallerIdentity::Anonymous
    );
    assert_eq!(
        identify(&info("", None, Some("none"), false), r),
        CallerIdentity::Anonymous
    );
    assert!(matches!(
        identify(&info("alice", None, None, false), r),
        CallerIdentity::Invalid(_)
    ));
}

fn customer(num: &str, name: &str, vip: bool) -> Customer {
    Customer {
        number: normalize(num, Region::Nanp).unwrap(),
        name: name.into(),
        tier: vip.then(|| "vip".into()),
        vip,
        language: None,
        notes: String::new(),
    }
}

fn call(id: &str, caller: Option<&E164>, minute: i64) -> CallRecord {
    let start = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap() + Duration::minutes(minute);
    CallRecord {
        call_id: CallId(id.into()),
        caller: caller.cloned(),
        dialed: "4000".into(),
        started_at: start,
        answered_at: Some(start + Duration::seconds(1)),
        ended_at: Some(start + Duration::seconds(90)),
        ivr_path: vec!["answer".into(), "main_menu".into(), "account_number".into()],
        digits: vec![
            StepDigits {
                step: "main_menu".into(),
                digits: "1".into(),
                sensitive: false,
            },
            StepDigits {
                step: "account_number".into(),
                digits: "12345678".into(),
                sensitive: true,
            },
        ],
        outcome: "hung_up".into(),
    }
}

#[test]
fn recognition_new_returning_vip_anonymous() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.upsert_customer(&customer("2125550100", "Ada", false))
        .unwrap();
    s.upsert_customer(&customer("2125550199", "Grace", true))
        .unwrap();
    let ada = normalize("2125550100", Region::Nanp).unwrap();

    let p = recognise(&s, CallerIdentity::Number(ada.clone())).unwrap();
    assert_eq!(p.customer.as_ref().unwrap().name, "Ada");
    assert!(!p.returning() && !p.vip() && !p.anonymous());
    s.record_call(&call("c1", Some(&ada), 0)).unwrap();
    assert!(
        recognise(&s, CallerIdentity::Number(ada))
            .unwrap()
            .returning()
    );

    let grace = normalize("2125550199", Region::Nanp).unwrap();
    assert!(recognise(&s, CallerIdentity::Number(grace)).unwrap().vip());
    let anon = recognise(&s, CallerIdentity::Anonymous).unwrap();
    assert!(anon.anonymous() && anon.customer.is_none() && !anon.returning());
    // Anonymous calls are recorded without a caller and never count for anyone.
    s.record_call(&call("c2", None, 1)).unwrap();
    assert_eq!(s.total_calls().unwrap(), 2);
}

#[test]
fn call_records_redact_sensitive_digits_and_update_in_place() {
    let s = SqliteStore::open_in_memory().unwrap();
    let ada = normalize("2125550100", Region::Nanp).unwrap();
    let mut r = call("c1", Some(&ada), 0);
    s.record_call(&r).unwrap();
    let got = s.call(&CallId("c1".into())).unwrap().unwrap();
    assert_eq!(got.digits[0].digits, "1");
    assert_eq!(got.digits[1].digits, REDACTED);
    assert_eq!(got.ivr_path, r.ivr_path);
    assert_eq!(got.started_at, r.started_at);
    r.outcome = "queued".into();
    s.record_call(&r).unwrap();
    assert_eq!(s.call_count(&ada).unwrap(), 1);
    assert_eq!(s.recent_calls(&ada, 10).unwrap()[0].outcome, "queued");
    assert!(s.call(&CallId("nope".into())).unwrap().is_none());
}

#[test]
fn csv_import_reports_bad_rows_with_line_numbers() {
    let s = SqliteStore::open_in_memory().unwrap();
    let csv = "phone,name,tier,vip,language,notes\n\
               (212) 555-0100,Ada Lovelace,gold,no,en,first\n\
               not-a-number,Bad Phone,,no,en,\n\
               2125550101,Bad Vip,,maybe,en,\n\
               2125550102,Too,Many,no,en,x,extra\n\
               212-555-0100,Ada Again,,no,en,dup\n\
               +8613800138000,李伟,vip,yes,zh,\"likes, commas\"\n\
               2125550103,Bad Lang,,no,english!,\n";
    let report = import_csv(&s, csv.as_bytes(), Region::Nanp).unwrap();
    assert_eq!(report.imported, 2);
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 8], "{report:#?}");
    assert!(
        report.errors[0]
            .message
            .contains("invalid phone \"not-a-number\"")
    );
    assert!(report.errors[1].message.contains("vip"));
    assert!(
        report.errors[2]
            .message
            .contains("expected 6 fields, found 7")
    );
    assert!(report.errors[3].message.contains("duplicate of line 2"));
    let li = s
        .customer(&normalize("+8613800138000", Region::Nanp).unwrap())
        .unwrap()
        .unwrap();
    assert!(li.vip);
    assert_eq!(li.language.as_deref(), Some("zh"));
    assert_eq!(li.notes, "likes, commas");
    assert_eq!(s.customer_count().unwrap(), 2);

    let err = import_csv(&s, "name,vip\nx,no\n".as_bytes(), Region::Nanp).unwrap_err();
    assert!(matches!(err, StoreError::MissingColumn { column: "phone" }));
}

#[test]
fn concurrent_writes_and_restart_keep_every_record() {
    let dir = TempDir::new("concurrent");
    let path = dir.0.join("frontdoor.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    store
        .upsert_customer(&customer("2125550100", "Ada", false))
        .unwrap();
    let ada = normalize("2125550100", Region::Nanp).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            let ada = ada.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let caller = (i % 2 == 0).then_some(&ada);
                    store
                        .record_call(&call(&format!("t{t}-{i}"), caller, i))
                        .unwrap();
                    if i % 50 == 0 {
                        // Reads interleave with the writes.
                        recognise(store.as_ref(), CallerIdentity::Number(ada.clone())).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.total_calls().unwrap(), 2000);
    assert_eq!(store.call_count(&ada).unwrap(), 1000);
    drop(store);

    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.total_calls().unwrap(), 2000);
    assert_eq!(reopened.call_count(&ada).unwrap(), 1000);
    assert_eq!(reopened.customer(&ada).unwrap().unwrap().name, "Ada");
    let r = reopened.call(&CallId("t3-499".into())).unwrap().unwrap();
    assert_eq!(r.digits[1].digits, REDACTED);
}

#[test]
fn glue_to_the_ivr_interpreter() {
    use frontdoor_store::ivr_glue::{CallTimes, call_record, caller_attributes};
    let s = SqliteStore::open_in_memory().unwrap();
    let mut c = customer("2125550199", "Grace", true);
    c.language = Some("zh".into());
    s.upsert_customer(&c).unwrap();
    let profile = recognise(&s, CallerIdentity::Number(c.number.clone())).unwrap();
    let attrs = caller_attributes(&profile);
    assert!(attrs.vip && attrs.known && !attrs.returning && !attrs.anonymous);
    assert_eq!(attrs.language.as_deref(), Some("zh"));
    assert_eq!(attrs.number.as_deref(), Some("+12125550199"));

    // Run a tiny flow and store its record.
    let src = "[[route]]\ndefault = true\nflow = \"m\"\n[flows.m]\nstart = \"g\"\n[flows.m.steps.g]\nverb = \"gather\"\nmax_digits = 4\nsensitive = true\nnext = \"bye\"\n[flows.m.steps.bye]\nverb = \"hangup\"\n";
    let plan = frontdoor_ivr::check_str(std::path::Path::new("m.toml"), src, None)
        .unwrap()
        .plan;
    let ctx = frontdoor_ivr::CallContext {
        call_id: "x1".into(),
        dialed: "4000".into(),
        trunk: None,
        caller: attrs,
    };
    let mut call = frontdoor_ivr::Call::new(plan, &frontdoor_ivr::FlowId("m".into()), ctx).unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let wall = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
    call.start(now, wall);
    for d in "4321".chars() {
        call.handle_event(frontdoor_ivr::Event::Dtmf(d), now, wall);
    }
    assert!(call.is_finished());
    let times = CallTimes {
        started_at: wall,
        answered_at: Some(wall),
        ended_at: Some(wall + Duration::seconds(5)),
    };
    let rec = call_record(&profile, "4000", times, call.summary());
    s.record_call(&rec).unwrap();
    let got = s.call(&CallId("x1".into())).unwrap().unwrap();
    assert_eq!(got.outcome, "hung_up");
    assert_eq!(got.ivr_path, vec!["g", "bye"]);
    assert_eq!(got.digits[0].digits, REDACTED);
    assert!(
        recognise(&s, CallerIdentity::Number(c.number))
            .unwrap()
            .returning()
    );

    let anon = caller_attributes(&recognise(&s, CallerIdentity::Anonymous).unwrap());
    assert!(anon.anonymous && anon.number.is_none() && anon.name.is_none());
}
