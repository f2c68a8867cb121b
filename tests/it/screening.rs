//! Cohort screening over one bidirectional stream: answers tagged by correlation id, errors
//! kept with their patient, each patient recorded as one decision, and the per-stream limit.

use std::collections::HashMap;

use crate::common::*;
use net_pathway::pb;
use net_pathway::pb::screen_cohort_response::Result as Answer;

fn screening(id: &str, patient: &Patient) -> pb::ScreenCohortRequest {
    pb::ScreenCohortRequest {
        correlation_id: id.into(),
        patient: Some(Box::new(patient.profile())),
        therapies: vec![Therapy::PrrtLu177Dotatate as i32],
        as_of_date: Some(date(2026, 11, 1)),
        view: pb::EvaluationView::Basic as i32,
        ..Default::default()
    }
}

/// Sends `requests` on one stream and collects every answer by correlation id.
async fn screen(
    server: &TestServer,
    requests: Vec<pb::ScreenCohortRequest>,
) -> (HashMap<String, Answer>, Option<tonic::Status>) {
    let mut answers = server
        .client
        .screen_cohort(tokio_stream::iter(requests))
        .await
        .expect("stream opens");
    let mut by_id = HashMap::new();
    loop {
        match answers.message().await {
            Ok(Some(a)) => {
                let previous = by_id.insert(a.correlation_id.clone(), a.result.expect("a result"));
                assert!(previous.is_none(), "one answer per patient");
            }
            Ok(None) => return (by_id, None),
            Err(status) => return (by_id, Some(status)),
        }
    }
}

/// A server, decision log on, whose screening streams share `places`, each reading ahead
/// `window` patients.
async fn server_with_places(window: usize, places: usize) -> TestServer {
    server_configured(
        net_pathway::config::Limits {
            screening_window: window,
            max_screening_patients: places,
            ..test_limits()
        },
        true,
    )
    .await
}

/// The server's metrics as Prometheus scrapes them.
fn metrics_text(server: &TestServer) -> String {
    server.state.metrics_text(&Default::default())
}

/// A bronchial NET: SSTR-positive, progressive, G2 (Ki-67 5 %), metastatic, England.
fn bronchial_net() -> Patient {
    Patient::new()
        .england()
        .aged(58)
        .primary(pb::PrimarySite::Lung)
        .lung_class(pb::LungClassification::AtypicalCarcinoid)
        .ki67(5.0)
        .metastatic()
        .progressive(true)
        .krenning(3)
}

#[tokio::test]
async fn a_clinic_list_is_screened_and_an_invalid_profile_does_not_stop_the_stream() {
    let server = server().await;
    let invalid = ta539_small_bowel().england().ki67(140.0);
    let (answers, ending) = screen(
        &server,
        vec![
            screening("clinic-row-1", &ta539_small_bowel().england()),
            screening("clinic-row-2", &invalid),
            screening("clinic-row-3", &bronchial_net()),
        ],
    )
    .await;
    assert!(ending.is_none(), "the stream ends when the list does");
    assert_eq!(answers.len(), 3);

    // TA539: small-bowel GEP NET in England, routinely commissioned under the TA.
    let Answer::Screened(row1) = &answers["clinic-row-1"] else {
        panic!("row 1 screened: {:?}", answers["clinic-row-1"])
    };
    let eligibility = row1.eligibility.as_ref().expect("eligibility");
    let funding = row1.funding.as_ref().expect("funding");
    assert_eq!(eligibility.therapies[0].status(), Status::Eligible);
    assert_eq!(
        funding.therapies[0].route(),
        Route::RoutinelyCommissionedNiceTa
    );
    assert!(
        eligibility.therapies[0].criteria.is_empty(),
        "BASIC view: status only"
    );

    // Ki-67 is a percentage: 140 is refused for this patient only, with the field named.
    let Answer::Error(error) = &answers["clinic-row-2"] else {
        panic!("row 2 refused: {:?}", answers["clinic-row-2"])
    };
    assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
    let status = net_pathway_client::stream_error(error);
    let fields: Vec<String> = net_pathway_client::field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["patient.tumour.ki67_percent"], "{status:?}");

    // Non-GEP (bronchial): clinically eligible; funding only through the audit registry,
    // whose new inclusion is on hold (reference: Lu-177 non-GEP position).
    let Answer::Screened(row3) = &answers["clinic-row-3"] else {
        panic!("row 3 screened: {:?}", answers["clinic-row-3"])
    };
    assert_eq!(
        row3.eligibility.as_ref().expect("eligibility").therapies[0].status(),
        Status::Eligible
    );
    assert_eq!(
        row3.funding.as_ref().expect("funding").therapies[0].route(),
        Route::AuditRegistryClosed
    );
}

/// A screened patient is one decision: the record holds the patient (identifiers replaced by
/// the pseudonym, the correlation id not kept) and both answers exactly as sent, and the
/// decision log finds it by eligibility status and funding route together.
#[tokio::test]
async fn each_screened_patient_is_one_decision_holding_both_answers() {
    let server = server().await;
    // Small-bowel NET, G2, progressive, Krenning 4, England: eligible for Lu-177 and routinely
    // commissioned through NICE TA539.
    let mut patient = screening("mdt-list-7", &ta539_small_bowel().england());
    if let Some(profile) = patient.patient.as_mut() {
        profile.identifiers = Some(pb::PatientIdentifiers {
            // NHS Digital's published example of a valid NHS number.
            nhs_number: "9434765919".into(),
            ..Default::default()
        });
    }
    let (answers, _) = screen(&server, vec![patient]).await;
    let Answer::Screened(result) = &answers["mdt-list-7"] else {
        panic!("screened: {:?}", answers["mdt-list-7"])
    };
    let eligibility = result.eligibility.as_ref().expect("eligibility");
    let funding = result.funding.as_ref().expect("funding");
    assert_eq!(eligibility.therapies[0].status(), Status::Eligible);
    assert_eq!(
        funding.therapies[0].route(),
        Route::RoutinelyCommissionedNiceTa
    );
    assert_eq!(eligibility.decision_id, funding.decision_id, "one decision");

    let record = server
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: eligibility.decision_id.clone(),
        })
        .await
        .expect("recorded")
        .decision
        .expect("record");
    assert_eq!(record.kind(), pb::DecisionKind::Screening);
    assert_eq!(record.caller, "anonymous");
    assert!(!record.patient_pseudonym.is_empty(), "pseudonymised");
    let Some(pb::decision_record::Request::ScreeningRequest(stored)) = &record.request else {
        panic!("a screening request: {:?}", record.request)
    };
    assert_eq!(
        stored.correlation_id, "",
        "the caller's label is not stored"
    );
    assert_eq!(
        stored.patient.as_ref().and_then(|p| p.identifiers.as_ref()),
        None,
        "identifiers are not stored"
    );
    assert_eq!(
        record.response,
        Some(pb::decision_record::Response::ScreeningResult(
            result.clone()
        )),
        "both answers exactly as sent"
    );

    // Eligible for Lu-177 and on that route: found; eligible on another route: not.
    let eligible_for_lu177_via = |route: Route| {
        server.client.list_decisions(pb::ListDecisionsRequest {
            therapy: Therapy::PrrtLu177Dotatate as i32,
            eligibility_status: Status::Eligible as i32,
            funding_route: route as i32,
            ..Default::default()
        })
    };
    let found = eligible_for_lu177_via(Route::RoutinelyCommissionedNiceTa)
        .await
        .expect("listed");
    let ids: Vec<&str> = found
        .decisions
        .iter()
        .map(|d| d.decision_id.as_str())
        .collect();
    assert_eq!(ids, [eligibility.decision_id.as_str()]);
    let not_found = eligible_for_lu177_via(Route::AuditRegistryClosed)
        .await
        .expect("listed");
    assert!(not_found.decisions.is_empty(), "{not_found:?}");

    // Replayed under the same policy, nothing changed, and the therapy reports both answers.
    let replayed = server
        .client
        .replay_decision(pb::ReplayDecisionRequest {
            decision_id: funding.decision_id.clone(),
        })
        .await
        .expect("a screened decision replays");
    let [lu177] = replayed.therapies.as_slice() else {
        panic!("one therapy: {replayed:?}")
    };
    assert!(!lu177.changed, "{lu177:?}");
    assert_eq!(lu177.original_status(), Status::Eligible);
    assert_eq!(lu177.current_status(), Status::Eligible);
    assert_eq!(lu177.original_route(), Route::RoutinelyCommissionedNiceTa);
    assert_eq!(lu177.current_route(), Route::RoutinelyCommissionedNiceTa);
}

#[tokio::test]
async fn a_missing_correlation_id_is_that_patients_error_with_every_violation() {
    let server = server().await;
    let mut unlabelled = screening("", &ta539_small_bowel().england().ki67(140.0));
    unlabelled.correlation_id = String::new();
    let (answers, ending) = screen(
        &server,
        vec![unlabelled, screening("after", &bronchial_net())],
    )
    .await;
    assert!(ending.is_none());
    let Answer::Error(error) = &answers[""] else {
        panic!("refused")
    };
    let status = net_pathway_client::stream_error(error);
    let fields: Vec<String> = net_pathway_client::field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["correlation_id", "patient.tumour.ki67_percent"],
        "{status:?}"
    );
    assert!(matches!(answers["after"], Answer::Screened(_)));
}

/// The server's metrics once they contain `line`: a stream is counted just after its last
/// answer is sent, so a scrape straight after the caller's last read may come first.
async fn metrics_once_they_show(server: &TestServer, line: &str) -> String {
    for _ in 0..100 {
        let metrics = metrics_text(server);
        if metrics.contains(line) {
            return metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("`{line}` never appeared in:\n{}", metrics_text(server));
}

#[tokio::test]
async fn a_stream_past_the_patient_limit_is_answered_up_to_it_then_ends_resource_exhausted() {
    let server = server_configured(
        net_pathway::config::Limits {
            max_patients_per_stream: 5,
            ..test_limits()
        },
        true,
    )
    .await;
    let requests = (0..8)
        .map(|i| screening(&format!("row-{i}"), &ta539_small_bowel().england()))
        .collect();
    let (answers, ending) = screen(&server, requests).await;
    assert_eq!(answers.len(), 5, "the first five are answered");
    let ending = ending.expect("the stream ends with an error");
    assert_eq!(ending.code(), tonic::Code::ResourceExhausted, "{ending:?}");
    assert!(ending.message().contains("new stream"), "{ending:?}");
    // Operators read that status in the stream's call metrics and its `call finished` line,
    // not the OK of the moment it opened; the stream is counted once.
    let metrics = metrics_once_they_show(
        &server,
        r#"netpathway_calls_total{code="ResourceExhausted",method="ScreenCohort"} 1"#,
    )
    .await;
    assert!(
        !metrics.contains(r#"netpathway_calls_total{code="Ok",method="ScreenCohort"}"#),
        "counted once, with the status the caller received: {metrics}"
    );
}

#[tokio::test]
async fn a_streams_duration_is_the_streams_not_the_time_taken_to_open_it() {
    // A clinic list whose second patient comes 400 ms after the first: the stream lasts at
    // least that long, and its duration says so.
    let server = server_configured(test_limits(), false).await;
    let first = screening("first", &ta539_small_bowel().england());
    let second = screening("second", &ta539_small_bowel().england());
    let patients = tokio_stream::StreamExt::chain(
        tokio_stream::iter([first]),
        tokio_stream::StreamExt::then(tokio_stream::iter([second]), |patient| async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            patient
        }),
    );
    let mut answers = server
        .client
        .screen_cohort(patients)
        .await
        .expect("stream opens");
    let mut answered = 0;
    while answers.message().await.expect("no error").is_some() {
        answered += 1;
    }
    assert_eq!(answered, 2);
    let metrics = metrics_once_they_show(
        &server,
        r#"netpathway_call_duration_seconds_count{method="ScreenCohort"} 1"#,
    )
    .await;
    let seconds: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"netpathway_call_duration_seconds_sum{method="ScreenCohort"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ScreenCohort duration in:\n{metrics}"));
    // The client's 400 ms start before the server's clock does (the call is received after the
    // first patient is sent), so the count may fall a little short of 0.4 s; opening alone takes
    // milliseconds, so 0.3 s still tells a stream's duration from its opening.
    assert!(
        seconds >= 0.3,
        "the stream took about 0.4 s, counted {seconds} s"
    );
}

#[tokio::test]
async fn with_the_decision_log_off_decisions_are_answered_but_not_recorded() {
    let server = server_configured(test_limits(), false).await;
    let answer = server
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            ..Default::default()
        })
        .await
        .expect("answered");
    let missing = server
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: answer.decision_id,
        })
        .await
        .expect_err("not recorded");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let metrics = metrics_text(&server);
    assert!(
        metrics.contains("netpathway_decision_log_enabled 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("netpathway_decision_log_commits_total 0"),
        "nothing committed with the log off: {metrics}"
    );
}

#[tokio::test]
async fn streams_share_the_servers_screening_places_and_each_is_answered_in_full() {
    // One place for the whole server: two clinic lists take turns rather than failing.
    let server = server_with_places(2, 1).await;
    let list = |clinic: &str| {
        (0..30)
            .map(|i| screening(&format!("{clinic}-row-{i}"), &ta539_small_bowel().england()))
            .collect::<Vec<_>>()
    };
    // A place never given back would stall the second list; the timeout turns that into a failure.
    let both = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(
            screen(&server, list("cardiff")),
            screen(&server, list("swansea"))
        )
    })
    .await
    .expect("both lists are answered");
    for (answers, ending) in [both.0, both.1] {
        assert!(ending.is_none(), "{ending:?}");
        assert_eq!(answers.len(), 30);
        assert!(answers.values().all(|a| matches!(a, Answer::Screened(_))));
    }
    let metrics = metrics_text(&server);
    assert!(
        metrics.contains("netpathway_screening_patients_in_progress 0"),
        "every place is given back: {metrics}"
    );
}

#[tokio::test]
async fn a_stream_whose_caller_sends_nothing_holds_no_place() {
    // One place for the whole server, and a stream opened by a caller who has sent nothing yet.
    let server = server_with_places(4, 1).await;
    let (idle_caller, nothing) = tokio::sync::mpsc::channel::<pb::ScreenCohortRequest>(1);
    let _idle = server
        .client
        .screen_cohort(tokio_stream::wrappers::ReceiverStream::new(nothing))
        .await
        .expect("stream opens");
    let list = (0..10)
        .map(|i| screening(&format!("clinic-row-{i}"), &ta539_small_bowel().england()))
        .collect();
    let (answers, ending) =
        tokio::time::timeout(std::time::Duration::from_secs(60), screen(&server, list))
            .await
            .expect("the list is answered while the other stream waits for its caller");
    assert!(ending.is_none(), "{ending:?}");
    assert_eq!(answers.len(), 10);
    drop(idle_caller);
}

/// Sends each of `messages` as it is, framed but not encoded by the client, on one ScreenCohort
/// stream: the only way to send the server bytes that do not parse.
async fn screen_raw(
    server: &TestServer,
    messages: Vec<Vec<u8>>,
) -> (Vec<pb::ScreenCohortResponse>, tonic::Status) {
    #[derive(Default)]
    struct Raw;
    struct RawEncoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            buf: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            prost::bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }
    struct AnswerDecoder;
    impl tonic::codec::Decoder for AnswerDecoder {
        type Item = pb::ScreenCohortResponse;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            buf: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<pb::ScreenCohortResponse>, tonic::Status> {
            prost::Message::decode(buf)
                .map(Some)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = pb::ScreenCohortResponse;
        type Encoder = RawEncoder;
        type Decoder = AnswerDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> AnswerDecoder {
            AnswerDecoder
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.address))
        .expect("address")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/netpathway.v1.ScreeningService/ScreenCohort",
    );
    let mut answers = grpc
        .streaming(tonic::Request::new(tokio_stream::iter(messages)), path, Raw)
        .await
        .expect("stream opens")
        .into_inner();
    let mut received = Vec::new();
    loop {
        match answers.message().await {
            Ok(Some(answer)) => received.push(answer),
            Ok(None) => panic!("the stream ended OK after {} answers", received.len()),
            Err(status) => return (received, status),
        }
    }
}

#[tokio::test]
async fn a_message_that_does_not_parse_ends_the_stream_with_invalid_argument_after_the_patients_before_it()
 {
    // An interface engine sends one patient, then bytes that are not a ScreenCohortRequest (a
    // string field whose length runs past the message). The first patient is answered; the
    // stream then ends INVALID_ARGUMENT, as a unary call with those bytes would, rather than OK
    // with the rest of the list silently unread.
    let server = server_configured(test_limits(), false).await;
    let first = prost::Message::encode_to_vec(&screening("first", &ta539_small_bowel().england()));
    let (answers, ending) = screen_raw(&server, vec![first, vec![0x0a, 0xff, 0xff]]).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].correlation_id, "first");
    assert_eq!(ending.code(), tonic::Code::InvalidArgument, "{ending:?}");
    metrics_once_they_show(
        &server,
        r#"netpathway_calls_total{code="InvalidArgument",method="ScreenCohort"} 1"#,
    )
    .await;
}
