//! Citations in a FULL answer, in the style its request asked: each source and each criterion's
//! statement once per answer, in its `sources` and `statements` (CITATION_STYLE_SHARED), or on
//! every item that cites them (CITATION_STYLE_INLINE, deprecated). The decision log records the
//! answer as it was built, so GetDecision returns it in the same style.
#![allow(deprecated)] // The inline style fills the deprecated fields; this is where.

use super::convert;
use crate::engine::Policy;
use crate::pb;

/// What one answer cites. Shared: the sources and statements, in order of first citation.
pub struct Citations {
    inline: bool,
    sources: Vec<usize>,
    source_seen: Vec<bool>,
    statements: Vec<usize>,
    statement_seen: Vec<bool>,
}

impl Citations {
    pub fn new(policy: &Policy, inline: bool) -> Self {
        let (sources, statements) = if inline {
            (0, 0)
        } else {
            (policy.sources.len(), policy.criteria.len())
        };
        Citations {
            inline,
            sources: Vec::new(),
            source_seen: vec![false; sources],
            statements: Vec::new(),
            statement_seen: vec![false; statements],
        }
    }

    /// Cites source `index` for an item: (source_id, source) as the style fills them.
    pub fn source(&mut self, policy: &Policy, index: usize) -> (String, Option<pb::Source>) {
        if self.inline {
            return (String::new(), Some(convert::source(policy, index)));
        }
        if let Some(seen) = self.source_seen.get_mut(index)
            && !*seen
        {
            *seen = true;
            self.sources.push(index);
        }
        (policy.source(index).id.clone(), None)
    }

    /// Cites criterion `index`'s statement for its result: its words and source inline, or
    /// once in the answer's tables.
    pub fn statement(&mut self, policy: &Policy, index: usize, result: &mut pb::CriterionResult) {
        let criterion = &policy.criteria[index];
        if self.inline {
            result.description = criterion.description.clone();
            result.source = Some(convert::source(policy, criterion.source));
            return;
        }
        if let Some(seen) = self.statement_seen.get_mut(index)
            && !*seen
        {
            *seen = true;
            self.statements.push(index);
            self.source(policy, criterion.source);
        }
    }

    /// The answer's `sources` and `statements`: empty inline.
    pub fn into_tables(self, policy: &Policy) -> (Vec<pb::Source>, Vec<pb::CriterionStatement>) {
        let sources = self
            .sources
            .iter()
            .map(|&i| convert::source(policy, i))
            .collect();
        let statements = self
            .statements
            .iter()
            .map(|&i| {
                let c = &policy.criteria[i];
                pb::CriterionStatement {
                    criterion_id: c.id.clone(),
                    description: c.description.clone(),
                    source_id: policy.source(c.source).id.clone(),
                }
            })
            .collect();
        (sources, statements)
    }
}

/// Whether a request's `citations` asks for the inline style: INLINE, or unspecified while
/// INLINE is the default.
pub fn asks_inline(citations: i32) -> bool {
    citations != pb::CitationStyle::Shared as i32
}
