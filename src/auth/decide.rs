//! What a verdict means for an item, by its supplier's `authenticate` setting: accept, reject
//! (`sender not authenticated …`) or leave it to be tried again. Pure: no DNS, no store.
//!
//! | verdict | `required` | `if-published` (default) | `off` |
//! |---|---|---|---|
//! | pass | accept | accept | accept |
//! | fail, policy quarantine/reject | reject | reject | accept |
//! | fail, policy none or unknown | reject | accept | accept |
//! | none | reject | accept | accept |
//! | temperror | retry later | accept, one warning | accept |

use serde::{Deserialize, Serialize};

use super::{Published, Status, Verdict};

/// How every rejection for sender authenticity begins (CONTRACT.md, "Sender authenticity").
pub const REJECT_PREFIX: &str = "sender not authenticated";

/// A supplier's `authenticate` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Requirement {
    /// Only mail that passes DMARC for its From domain is accepted.
    Required,
    /// Mail that fails DMARC is rejected when its From domain publishes `p=quarantine` or
    /// `p=reject`; everything else is accepted.
    #[default]
    IfPublished,
    /// Not enforced; the verdict is still recorded.
    Off,
}

impl Requirement {
    /// Reads the setting as written in a format file.
    pub fn parse(text: &str) -> Result<Requirement, String> {
        match text {
            "required" => Ok(Requirement::Required),
            "if-published" => Ok(Requirement::IfPublished),
            "off" => Ok(Requirement::Off),
            other => Err(format!(
                "authenticate {other:?} is unknown: use \"required\", \"if-published\" or \"off\""
            )),
        }
    }

    /// The setting as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Required => "required",
            Requirement::IfPublished => "if-published",
            Requirement::Off => "off",
        }
    }
}

/// What happens to the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the item.
    Accept,
    /// Go on with the item, and say this once (a `temperror` under `if-published`).
    AcceptWithWarning(String),
    /// Reject the item with this reason; it starts with [`REJECT_PREFIX`].
    Reject(String),
    /// Leave the item where it is and try again later (a `temperror` under `required`); the
    /// text says why.
    RetryLater(String),
}

/// The decision for a verdict under a supplier's setting (the table in the module doc).
pub fn decide(requirement: Requirement, verdict: &Verdict) -> Decision {
    let domain = verdict.from_domain.as_deref().unwrap_or("(no From domain)");
    let text = &verdict.text;
    match (requirement, verdict.status) {
        (Requirement::Off, _) | (_, Status::Pass) => Decision::Accept,
        (Requirement::Required, Status::Fail) => Decision::Reject(format!(
            "{REJECT_PREFIX}: DMARC fails for {domain} and the supplier requires authentication ({text})"
        )),
        (Requirement::Required, Status::None) => Decision::Reject(format!(
            "{REJECT_PREFIX}: nothing authenticates {domain} and the supplier requires authentication ({text})"
        )),
        (Requirement::Required, Status::TempError) => Decision::RetryLater(format!(
            "sender authenticity of {domain} not known yet: DNS failed temporarily, and the supplier \
             requires authentication ({text})"
        )),
        (Requirement::IfPublished, Status::Fail) => match verdict.policy {
            Some(policy @ (Published::Quarantine | Published::Reject)) => {
                Decision::Reject(format!(
                    "{REJECT_PREFIX}: DMARC fails for {domain}, which publishes p={} ({text})",
                    policy.as_str()
                ))
            }
            Some(Published::None) | None => Decision::Accept,
        },
        (Requirement::IfPublished, Status::None) => Decision::Accept,
        (Requirement::IfPublished, Status::TempError) => Decision::AcceptWithWarning(format!(
            "sender authenticity of {domain} not checked: DNS failed temporarily; accepted with the \
             verdict temperror ({text})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DecidedBy;

    fn verdict(status: Status, policy: Option<Published>) -> Verdict {
        Verdict {
            status,
            from_domain: Some("supplier.example".into()),
            aligned_domain: (status == Status::Pass).then(|| "supplier.example".into()),
            policy,
            decided_by: DecidedBy::Eingang,
            authserv_id: None,
            text: "dkim=none, dmarc=…".into(),
        }
    }

    /// What a decision is, without its text.
    fn kind(decision: &Decision) -> &'static str {
        match decision {
            Decision::Accept => "accept",
            Decision::AcceptWithWarning(_) => "warn",
            Decision::Reject(_) => "reject",
            Decision::RetryLater(_) => "retry",
        }
    }

    #[test]
    fn every_cell_of_the_table() {
        use Published::{None as PNone, Quarantine, Reject};
        use Requirement::{IfPublished, Off, Required};
        let rows: [(Status, Option<Published>, [&str; 3]); 9] = [
            // verdict, policy:                     required, if-published, off
            (Status::Pass, Some(Reject), ["accept", "accept", "accept"]),
            (Status::Pass, None, ["accept", "accept", "accept"]),
            (Status::Fail, Some(Reject), ["reject", "reject", "accept"]),
            (
                Status::Fail,
                Some(Quarantine),
                ["reject", "reject", "accept"],
            ),
            (Status::Fail, Some(PNone), ["reject", "accept", "accept"]),
            (Status::Fail, None, ["reject", "accept", "accept"]),
            (Status::None, None, ["reject", "accept", "accept"]),
            (Status::TempError, None, ["retry", "warn", "accept"]),
            (Status::TempError, Some(Reject), ["retry", "warn", "accept"]),
        ];
        for (status, policy, expected) in rows {
            let v = verdict(status, policy);
            for (requirement, want) in [Required, IfPublished, Off].into_iter().zip(expected) {
                let got = decide(requirement, &v);
                assert_eq!(
                    kind(&got),
                    want,
                    "{requirement:?} {status} {policy:?}: {got:?}"
                );
                if let Decision::Reject(reason) = &got {
                    assert!(reason.starts_with("sender not authenticated: "), "{reason}");
                    assert!(reason.contains("supplier.example"), "{reason}");
                    assert!(reason.contains(&v.text), "{reason}");
                }
            }
        }
    }

    #[test]
    fn reasons_say_what_failed() {
        let v = verdict(Status::Fail, Some(Published::Reject));
        let Decision::Reject(reason) = decide(Requirement::IfPublished, &v) else {
            panic!("a rejection");
        };
        assert_eq!(
            reason,
            "sender not authenticated: DMARC fails for supplier.example, which publishes p=reject (dkim=none, dmarc=…)"
        );
        let Decision::RetryLater(why) =
            decide(Requirement::Required, &verdict(Status::TempError, None))
        else {
            panic!("retry later");
        };
        assert!(why.contains("DNS failed temporarily"), "{why}");
        let Decision::AcceptWithWarning(warning) =
            decide(Requirement::IfPublished, &verdict(Status::TempError, None))
        else {
            panic!("a warning");
        };
        assert!(warning.contains("temperror"), "{warning}");
    }

    #[test]
    fn the_setting_as_written() {
        assert_eq!(Requirement::default(), Requirement::IfPublished);
        for r in [
            Requirement::Required,
            Requirement::IfPublished,
            Requirement::Off,
        ] {
            assert_eq!(Requirement::parse(r.as_str()), Ok(r));
        }
        let err = Requirement::parse("always").unwrap_err();
        assert_eq!(
            err,
            "authenticate \"always\" is unknown: use \"required\", \"if-published\" or \"off\""
        );
    }

    #[test]
    fn a_verdict_is_stored_as_json_and_read_back() {
        let v = Verdict {
            authserv_id: Some("mx.shop.example".into()),
            decided_by: DecidedBy::TrustedHeader,
            ..verdict(Status::Pass, Some(Published::Quarantine))
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r#"{"status":"pass","from_domain":"supplier.example","aligned_domain":"supplier.example","policy":"quarantine","decided_by":"trusted-header","authserv_id":"mx.shop.example","text":"dkim=none, dmarc=…"}"#
        );
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        let temp = serde_json::to_value(verdict(Status::TempError, None)).unwrap();
        assert_eq!(temp["status"], "temperror");
        assert!(temp.get("policy").is_none());
        let minimal: Verdict =
            serde_json::from_str(r#"{"status":"none","decided_by":"eingang","text":""}"#).unwrap();
        assert_eq!(minimal.from_domain, None);
    }
}
