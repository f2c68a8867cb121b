//! What a check found and how much it says: the three-valued outcome (and "does not apply"),
//! the values and missing inputs behind it, and the detail (outcome only, or explained) every
//! check, grade and answer is made at.

use std::borrow::Cow;

/// Three-valued outcome (clinical README, position 2), and "does not apply" for a criterion
/// that has no meaning for the patient (a WHO digestive grade for a phaeochromocytoma,
/// position 6): it neither blocks nor supports, and the therapy's other criteria decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Met,
    Unmet,
    Unknown,
    NotApplicable,
}

impl Outcome {
    /// Whether a required criterion with this outcome lets the answer through.
    pub fn holds(self) -> bool {
        matches!(self, Outcome::Met | Outcome::NotApplicable)
    }
}

/// Text in an answer: the policy's own words are borrowed, anything formatted is owned.
pub(crate) type Text = std::borrow::Cow<'static, str>;

/// A number with its unit as a UCUM code (https://ucum.org), for programs; the value's text
/// says it for people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    pub value: f64,
    pub unit: &'static str,
}

/// A patient value as a check used it: its text with its unit, and the number when it is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub text: Text,
    pub quantity: Option<Quantity>,
}

impl Shown {
    /// A measured number: "{value} {unit}" and the quantity in UCUM, when explaining; nothing
    /// otherwise (BASIC answers show no values).
    pub(crate) fn measured(d: Detail, value: f64, unit: &'static str, ucum: &'static str) -> Self {
        Shown {
            text: d.text(|| format!("{value} {unit}").trim_end().to_string()),
            quantity: d.explains().then_some(Quantity { value, unit: ucum }),
        }
    }
}

impl From<Text> for Shown {
    fn from(text: Text) -> Self {
        Shown {
            text,
            quantity: None,
        }
    }
}

impl From<&'static str> for Shown {
    fn from(text: &'static str) -> Self {
        Text::Borrowed(text).into()
    }
}

impl From<String> for Shown {
    fn from(text: String) -> Self {
        Text::Owned(text).into()
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub outcome: Outcome,
    /// (field path, value with unit); explained findings only.
    pub values: Vec<(&'static str, Shown)>,
    /// Field paths that would settle an UNKNOWN: most checks name a fixed list, borrowed
    /// rather than copied into an allocation for each finding.
    pub missing: Cow<'static, [&'static str]>,
    /// Empty unless the finding was explained.
    pub explanation: Text,
    pub(super) explained: bool,
}

/// A finding no check made: the criterion is not in the policy the facts were made for.
pub(super) static NOT_IN_POLICY: Finding = Finding {
    outcome: Outcome::Unknown,
    values: Vec::new(),
    missing: Cow::Borrowed(&[]),
    explanation: Text::Borrowed("this criterion is not in the active policy"),
    explained: true,
};

/// How much a check says: the outcome and the missing inputs always; the values it read and
/// its explanation only when asked. BASIC answers never show them, so screening does not pay
/// for text it would throw away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    explain: bool,
}

impl Detail {
    pub const OUTCOME: Detail = Detail { explain: false };
    pub const EXPLAINED: Detail = Detail { explain: true };

    pub fn explains(self) -> bool {
        self.explain
    }

    /// `make()` when explaining, else nothing (and no allocation).
    pub fn text(self, make: impl FnOnce() -> String) -> Text {
        if self.explain {
            Text::Owned(make())
        } else {
            Text::Borrowed("")
        }
    }

    pub(super) fn finding(self, outcome: Outcome, explanation: impl Into<Text>) -> Finding {
        Finding {
            outcome,
            values: Vec::new(),
            missing: Cow::Borrowed(&[]),
            explanation: if self.explain {
                explanation.into()
            } else {
                Text::Borrowed("")
            },
            explained: self.explain,
        }
    }

    pub(super) fn not_applicable(self, explanation: impl Into<Text>) -> Finding {
        self.finding(Outcome::NotApplicable, explanation)
    }

    pub(super) fn decided(self, met: bool, explanation: impl Into<Text>) -> Finding {
        self.finding(if met { Outcome::Met } else { Outcome::Unmet }, explanation)
    }

    pub(super) fn unknown(
        self,
        missing: impl Into<Cow<'static, [&'static str]>>,
        explanation: impl Into<Text>,
    ) -> Finding {
        let mut f = self.finding(Outcome::Unknown, explanation);
        f.missing = missing.into();
        f
    }
}

impl Finding {
    pub(super) fn value(mut self, field: &'static str, value: impl Into<Shown>) -> Self {
        if self.explained {
            self.values.push((field, value.into()));
        }
        self
    }
}
