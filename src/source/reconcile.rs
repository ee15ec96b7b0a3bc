//! What to do with an item a crash left unfinished, decided from its committed outcome and
//! from what its source found. Pure: the source looks, this decides, the loop in `pass` acts.

use crate::disposition::Disposition;
use crate::store::{Place, Unfinished};

use super::VANISHED;

/// An unfinished item, with the folder its committed outcome sends it to (`None`: never
/// decided).
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The ledger's record of it.
    pub item: Unfinished,
    /// Archive or error, by its outcome; where to look for it once it left the inbox.
    pub look_in: Option<Disposition>,
}

impl Wanted {
    /// The item, with the folder its outcome sends it to.
    pub fn of(item: Unfinished) -> Wanted {
        let look_in = item.outcome.as_ref().and_then(Disposition::of);
        Wanted { item, look_in }
    }
}

/// What a source found of an unfinished item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<E> {
    /// In the inbox under a name that may have been reused (a file): the pass meets it again
    /// and the ledger, by its bytes, says whether it is decided.
    Listed,
    /// In the inbox, certainly this item (an IMAP UID names one message for ever): a decided
    /// one can be moved right away, without reading it again.
    InInbox(E),
    /// Already where its outcome sent it (moved before the crash, the record missing).
    Found(Place),
    /// Gone from the inbox, and not found in the folder it was looked for in.
    NotFound {
        /// The folder looked in, as configured.
        looked_in: String,
    },
    /// Gone from the inbox, never decided, so not looked for: someone else took it.
    Gone,
    /// Not an item of this inbox as it is configured now (another folder, an old server).
    Elsewhere,
}

/// What the loop does with an unfinished item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<E> {
    /// Move it now by its committed outcome.
    Move(E, Disposition),
    /// Record where it lies; it is done.
    Record(Place),
    /// Nothing now: the pass meets it in the inbox, or it is not this inbox's.
    Leave,
}

/// Decides the step for one unfinished item from what its source found.
pub fn plan<E>(item: &Unfinished, seen: Seen<E>) -> Step<E> {
    match seen {
        Seen::Listed | Seen::Elsewhere => Step::Leave,
        Seen::InInbox(entry) => match item.outcome.as_ref().and_then(Disposition::of) {
            Some(disposition) => Step::Move(entry, disposition),
            // Never decided (or waiting for DNS): the pass meets it again.
            None => Step::Leave,
        },
        Seen::Found(place) => Step::Record(place),
        Seen::NotFound { looked_in } => match item.outcome {
            Some(_) => Step::Record(Place::at(format!(
                "moved to {looked_in} before a crash; not found there"
            ))),
            None => Step::Record(Place::at(VANISHED)),
        },
        Seen::Gone => Step::Record(Place::at(VANISHED)),
    }
}

/// The places listed in an archive that the ledger does not know, among the ones it could
/// know: in a folder the ledger has placed items in, and, where a place names a message by
/// `UIDVALIDITY:UID`, above the lowest UID the ledger knows there (older mail in an archive
/// is the admin's own). Such items came after the ledger's newest record was lost: a store
/// restored from an older copy.
pub fn unrecorded(listed: Vec<Place>, known: &[Place]) -> Vec<Place> {
    let folder = |p: &Place| match &p.reference {
        Some(_) => p.at.clone(),
        None => {
            p.at.rsplit_once('/')
                .map_or(String::new(), |(dir, _)| dir.to_owned())
        }
    };
    let uid = |p: &Place| {
        p.reference
            .as_deref()
            .and_then(|r| r.split_once(':'))
            .and_then(|(v, u)| Some((v.parse::<u32>().ok()?, u.parse::<u32>().ok()?)))
    };
    listed
        .into_iter()
        .filter(|p| !known.contains(p))
        .filter(|p| {
            let here: Vec<&Place> = known.iter().filter(|k| folder(k) == folder(p)).collect();
            match uid(p) {
                Some((validity, u)) => here
                    .iter()
                    .filter_map(|k| uid(k))
                    .filter(|(v, _)| *v == validity)
                    .map(|(_, k)| k)
                    .min()
                    .is_some_and(|lowest| u > lowest),
                None => !here.is_empty(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outcome;

    #[test]
    fn archived_items_the_ledger_lost_are_found_and_the_admins_own_are_not() {
        let file = |at: &str| Place::at(at);
        let mail = |u: u32| Place {
            at: "Archiv".into(),
            reference: Some(format!("7:{u}")),
        };
        let known = [file("archiv/ls-1.xml"), mail(10), mail(11)];
        let listed = vec![
            file("archiv/ls-1.xml"),
            file("archiv/ls-2.xml"),
            file("anderswo/x.xml"),
            mail(3),
            mail(10),
            mail(12),
            Place {
                at: "Archiv".into(),
                reference: Some("8:40".into()),
            },
        ];
        assert_eq!(
            unrecorded(listed, &known),
            [file("archiv/ls-2.xml"), mail(12)]
        );
        assert!(unrecorded(vec![file("archiv/a.xml")], &[]).is_empty());
    }

    fn item(outcome: Option<Outcome>) -> Unfinished {
        Unfinished {
            item_id: 7,
            location: "in/ls.xml".into(),
            file_name: Some("ls.xml".into()),
            outcome,
            sha256: "ab".into(),
            message_id: None,
            size: 10,
        }
    }

    fn imported() -> Option<Outcome> {
        Some(Outcome::Imported {
            item_id: 7,
            documents: Vec::new(),
        })
    }

    fn rejected() -> Option<Outcome> {
        Some(Outcome::Rejected {
            item_id: 7,
            reason: "broken".into(),
        })
    }

    #[test]
    fn a_decided_item_still_in_the_inbox_is_moved_by_its_outcome() {
        assert_eq!(
            plan(&item(imported()), Seen::InInbox("uid 4")),
            Step::Move("uid 4", Disposition::Archive)
        );
        assert_eq!(
            plan(&item(rejected()), Seen::InInbox("uid 4")),
            Step::Move(
                "uid 4",
                Disposition::Error {
                    item_id: 7,
                    reason: "broken".into()
                }
            )
        );
    }

    #[test]
    fn an_undecided_item_in_the_inbox_is_left_for_the_pass() {
        assert_eq!(plan(&item(None), Seen::InInbox("uid 4")), Step::Leave);
        assert_eq!(plan::<&str>(&item(None), Seen::Listed), Step::Leave);
        assert_eq!(plan::<&str>(&item(imported()), Seen::Listed), Step::Leave);
        assert_eq!(
            plan::<&str>(&item(imported()), Seen::Elsewhere),
            Step::Leave
        );
    }

    #[test]
    fn a_moved_item_is_recorded_where_it_was_found_or_as_not_found() {
        let found = Place {
            at: "Archiv".into(),
            reference: Some("9:3".into()),
        };
        assert_eq!(
            plan::<&str>(&item(imported()), Seen::Found(found.clone())),
            Step::Record(found)
        );
        assert_eq!(
            plan::<&str>(
                &item(rejected()),
                Seen::NotFound {
                    looked_in: "Fehler".into()
                }
            ),
            Step::Record(Place::at("moved to Fehler before a crash; not found there"))
        );
    }

    #[test]
    fn an_undecided_item_that_left_the_inbox_is_recorded_as_vanished() {
        assert_eq!(
            plan::<&str>(&item(None), Seen::Gone),
            Step::Record(Place::at(VANISHED))
        );
        assert_eq!(
            plan::<&str>(
                &item(None),
                Seen::NotFound {
                    looked_in: "x".into()
                }
            ),
            Step::Record(Place::at(VANISHED))
        );
    }

    #[test]
    fn the_folder_to_look_in_follows_the_outcome() {
        assert_eq!(
            Wanted::of(item(imported())).look_in,
            Some(Disposition::Archive)
        );
        assert!(matches!(
            Wanted::of(item(rejected())).look_in,
            Some(Disposition::Error { item_id: 7, .. })
        ));
        assert_eq!(Wanted::of(item(None)).look_in, None);
    }
}
