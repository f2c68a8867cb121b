//! Asks a running net-pathway which funding route Lu-177 PRRT would take for one patient.
//!
//! ```sh
//! cargo run -p net-pathway                                # in one terminal: the server on 127.0.0.1:50051
//! cargo run -p net-pathway-client --example evaluate       # in another
//! cargo run -p net-pathway-client --example evaluate -- http://127.0.0.1:50051
//! ```

use net_pathway_client::pb;
use net_pathway_client::{NetPathwayClient, field_violations};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = NetPathwayClient::connect(endpoint).await?;

    // A 64-year-old in England with a metastatic, progressive, well-differentiated G2
    // (Ki-67 8 %) small-bowel NET, Krenning 4 on Ga-68 DOTATATE PET.
    let patient = pb::PatientProfile {
        demographics: Some(pb::Demographics {
            nation: pb::Nation::England as i32,
            age_years: Some(64),
            ..Default::default()
        }),
        tumour: Some(pb::Tumour {
            primary_site: pb::PrimarySite::JejunumIleum as i32,
            differentiation: pb::Differentiation::Well as i32,
            ki67_percent: Some(8.0),
            ..Default::default()
        }),
        extent: Some(pb::DiseaseExtent {
            extent: pb::Extent::Metastatic as i32,
            ..Default::default()
        }),
        progression: Some(pb::Progression {
            progressive: Some(true),
            ..Default::default()
        }),
        imaging: Some(pb::Imaging {
            krenning_score: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    };
    let therapies = vec![pb::Therapy::PrrtLu177Dotatate as i32];

    let eligibility = client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(patient.clone())),
            therapies: therapies.clone(),
            ..Default::default()
        })
        .await;
    let eligibility = match eligibility {
        Ok(answer) => answer,
        Err(status) => {
            for v in field_violations(&status) {
                eprintln!("{}: {}", v.field, v.description);
            }
            return Err(status.into());
        }
    };
    for t in &eligibility.therapies {
        println!(
            "{}: {}",
            t.therapy().as_str_name(),
            t.status().as_str_name()
        );
        println!("  {}", t.summary);
        for flag in &t.safety_flags {
            println!(
                "  flag {} ({}): {}",
                flag.flag_id,
                flag.severity().as_str_name(),
                flag.message
            );
        }
    }

    let funding = client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(patient)),
            therapies,
            ..Default::default()
        })
        .await?;
    for t in &funding.therapies {
        println!("{}: {}", t.therapy().as_str_name(), t.route().as_str_name());
        println!("  {}", t.summary);
        if let Some(c) = &t.commissioner {
            println!("  commissioner: {}", c.name);
        }
        for site in &t.delivery_sites {
            println!("  delivered at: {}", site.name);
        }
    }
    if let Some(policy) = funding.policy {
        println!(
            "decision {} under policy {} ({}), service build {}",
            funding.decision_id, policy.version, policy.content_hash, policy.service_build
        );
    }
    Ok(())
}
