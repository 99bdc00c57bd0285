//! `ca status`, `ca rotate-intermediate`, `ca rotate-root` on the wire: the registrar's
//! answers as protobuf.

use dtca_pki::authority::lineage::{CaCert, CaKind};
use dtca_proto::v1;
use time::OffsetDateTime;

use serde_json::json;

use super::{rfc3339, role_name, role_to_proto};
use crate::lifecycle::ops::{Prepared, Started};
use crate::registrar::CaReport;

/// The `CaStatus` answer.
pub fn status(report: &CaReport, now: OffsetDateTime) -> v1::CaStatusResponse {
    let state = &report.state;
    let lineage = state.lineage();
    let active = lineage.active_root();
    let rotation = lineage.rotation_started();
    let roots = lineage
        .certs()
        .iter()
        .filter(|c| c.kind == CaKind::Root)
        .map(|c| v1::CaRoot {
            digest: c.digest().to_string(),
            subject: c.info.subject.clone(),
            not_before_unix: c.info.not_before.unix_timestamp(),
            not_after_unix: c.info.not_after.unix_timestamp(),
            state: if c.retired {
                "retired"
            } else if c.der == active.der {
                "active"
            } else {
                "old"
            }
            .into(),
            der: c.der.clone(),
        })
        .collect();
    let signing = lineage.signing(now).map(CaCert::id);
    let successor = lineage.successor(now).map(CaCert::id);
    let mut intermediates: Vec<v1::CaIntermediate> = lineage
        .certs()
        .iter()
        .filter(|c| c.kind == CaKind::Intermediate)
        .filter(|c| c.info.not_after > now)
        .map(|c| {
            let s = c.schedule();
            let id = Some(c.id());
            v1::CaIntermediate {
                serial: c.info.serial.to_string(),
                subject: c.info.subject.clone(),
                root_digest: lineage
                    .root_of(&c.info)
                    .map(|r| r.digest().to_string())
                    .unwrap_or_default(),
                start_unix: s.start.unix_timestamp(),
                not_after_unix: c.info.not_after.unix_timestamp(),
                state: if id == signing {
                    "active"
                } else if id == successor || s.start > now {
                    "prepared"
                } else {
                    "previous"
                }
                .into(),
                switch_unix: s.switch_at.unix_timestamp(),
                leaf_cap_seconds: i64::try_from(s.leaf_cap.as_secs()).unwrap_or(i64::MAX),
            }
        })
        .collect();
    intermediates.sort_by_key(|i| i.start_unix);
    let plan = lineage.plan(now, report.intermediate_lifetime);
    let rotation = rotation.map(|started| {
        let members: Vec<v1::RotationMember> = report
            .members
            .iter()
            .map(|m| v1::RotationMember {
                role: role_to_proto(m.role).into(),
                name: m.name.clone(),
                serial: m.serial.clone(),
                root_digest: m.root.map(|d| d.to_string()).unwrap_or_default(),
                trusts_new_root: m.trusts_new_root,
                issued_unix: m.issued_at.unix_timestamp(),
                last_seen_unix: m.last_seen.unix_timestamp(),
                not_after_unix: m.not_after.unix_timestamp(),
                lagging: m.lagging,
            })
            .collect();
        v1::CaRotation {
            started_unix: started.unix_timestamp(),
            old_root_digest: lineage
                .roots()
                .iter()
                .find(|r| r.der != active.der)
                .map(|r| r.digest().to_string())
                .unwrap_or_default(),
            new_root_digest: active.digest().to_string(),
            lagging: u32::try_from(members.iter().filter(|m| m.lagging).count())
                .unwrap_or(u32::MAX),
            members,
        }
    });
    v1::CaStatusResponse {
        cluster: state.cluster().to_string(),
        roots,
        intermediates,
        next_switch_unix: plan.successor.map_or(0, |s| s.start.unix_timestamp()),
        leaf_cap_seconds: plan.signing.map_or(0, |s| {
            i64::try_from(s.leaf_cap.as_secs()).unwrap_or(i64::MAX)
        }),
        warnings: report.warnings.clone(),
        rotation,
        generation: state.trust_generation(now),
    }
}

/// The `RotateIntermediate` answer.
pub fn prepared(p: Option<Prepared>) -> v1::RotateIntermediateResponse {
    match p {
        Some(p) => v1::RotateIntermediateResponse {
            prepared: true,
            subject: p.subject,
            start_unix: p.start.unix_timestamp(),
            not_after_unix: p.not_after.unix_timestamp(),
        },
        None => v1::RotateIntermediateResponse::default(),
    }
}

/// The `RotateRoot` answer for a start.
pub fn started(s: &Started) -> v1::RotateRootResponse {
    v1::RotateRootResponse {
        old_root_digest: s.old_root.to_string(),
        new_root_digest: s.new_root.to_string(),
        not_after_unix: s.not_after.unix_timestamp(),
        left_behind: Vec::new(),
        finished: false,
    }
}

/// `ca status --json`, and the CA part of the web page's data.
pub fn status_json(s: &v1::CaStatusResponse) -> serde_json::Value {
    json!({
        "cluster": s.cluster,
        "generation": s.generation,
        "roots": s.roots.iter().map(|r| json!({
            "digest": r.digest, "subject": r.subject, "state": r.state,
            "not_before": rfc3339(r.not_before_unix), "not_after": rfc3339(r.not_after_unix),
            "not_after_unix": r.not_after_unix,
        })).collect::<Vec<_>>(),
        "intermediates": s.intermediates.iter().map(|i| json!({
            "serial": i.serial, "subject": i.subject, "state": i.state, "root_digest": i.root_digest,
            "start": rfc3339(i.start_unix), "start_unix": i.start_unix,
            "switch": rfc3339(i.switch_unix), "switch_unix": i.switch_unix,
            "not_after": rfc3339(i.not_after_unix), "not_after_unix": i.not_after_unix,
            "leaf_cap_seconds": i.leaf_cap_seconds,
        })).collect::<Vec<_>>(),
        "next_switch_unix": s.next_switch_unix,
        "leaf_cap_seconds": s.leaf_cap_seconds,
        "warnings": s.warnings,
        "rotation": s.rotation.as_ref().map(|r| json!({
            "started": rfc3339(r.started_unix), "started_unix": r.started_unix,
            "old_root_digest": r.old_root_digest, "new_root_digest": r.new_root_digest,
            "lagging": r.lagging,
            "members": r.members.iter().map(|m| json!({
                "role": role_name(m.role), "name": m.name, "serial": m.serial,
                "root_digest": m.root_digest, "trusts_new_root": m.trusts_new_root,
                "issued_unix": m.issued_unix, "last_seen": rfc3339(m.last_seen_unix),
                "last_seen_unix": m.last_seen_unix, "not_after_unix": m.not_after_unix,
                "lagging": m.lagging,
            })).collect::<Vec<_>>(),
        })),
    })
}
