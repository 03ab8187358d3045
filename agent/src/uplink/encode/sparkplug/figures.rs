//! The figures of assets, lines and quality stations as metric values, named as in
//! [`super::catalog`].

use crate::health::assess::Assessment;
use crate::production::line::LineReport;
use crate::quality::station::{PartDecision, QualityReport};
use crate::sample::Value;

type Figures = Vec<(String, Option<Value>)>;

fn number(v: Option<f64>) -> Option<Value> {
    v.filter(|v| v.is_finite()).map(Value::F64)
}

/// A serde-named enum (`snake_case`) as text.
fn name_of(value: &impl serde::Serialize) -> Option<Value> {
    match serde_json::to_value(value).ok()? {
        serde_json::Value::String(name) => Some(Value::Text(name)),
        serde_json::Value::Null => None,
        other => Some(Value::Text(other.to_string())),
    }
}

fn named(list: Vec<(&str, Option<Value>)>) -> Figures {
    list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub fn asset(a: &Assessment) -> Figures {
    let mut figures = named(vec![
        ("health", number(Some(a.overall_health))),
        ("failure_probability", number(Some(a.failure_probability))),
        ("action", name_of(&a.action)),
        ("priority", name_of(&a.priority)),
        ("remaining_life_hours", number(a.remaining_life_hours)),
        (
            "reason",
            Some(Value::Text(a.reasons.first().cloned().unwrap_or_default())),
        ),
    ]);
    if let Some(v) = &a.vibration {
        let diagnosis = v.diagnoses.first().map(|d| d.reason.clone());
        figures.extend(named(vec![
            ("vibration/velocity_rms", number(Some(v.velocity_rms))),
            (
                "vibration/acceleration_rms",
                number(Some(v.acceleration_rms)),
            ),
            ("vibration/crest_factor", number(Some(v.crest_factor))),
            ("vibration/kurtosis", number(Some(v.kurtosis))),
            ("vibration/bearing_defect_db", number(v.bearing_defect_db())),
            (
                "vibration/diagnosis",
                Some(Value::Text(diagnosis.unwrap_or_default())),
            ),
        ]));
    }
    figures
}

pub fn line(r: &LineReport) -> Figures {
    let f = &r.figures;
    named(vec![
        ("oee", number(f.oee)),
        ("availability", number(f.availability)),
        ("performance", number(f.performance)),
        ("quality", number(f.quality)),
        ("total", number(Some(f.total))),
        ("good", number(Some(f.good))),
        ("reject", number(Some(f.reject))),
        ("state", r.state.as_ref().and_then(name_of)),
        ("shift", Some(Value::Text(r.shift.clone()))),
    ])
}

pub fn station(q: &QualityReport) -> Figures {
    let mut figures = named(vec![
        ("parts", Some(Value::U64(q.parts))),
        ("pass", Some(Value::U64(q.pass))),
        ("review", Some(Value::U64(q.review))),
        ("reject", Some(Value::U64(q.reject))),
        ("reject_rate", number(q.reject_rate())),
        ("mean_score", number(q.mean_score)),
    ]);
    figures.extend(
        q.characteristics
            .iter()
            .map(|c| (format!("cpk/{}", c.name), number(c.capability.cpk))),
    );
    figures
}

pub fn part(p: &PartDecision) -> Figures {
    named(vec![
        ("part/id", p.part_id.clone().map(Value::Text)),
        ("part/decision", name_of(&p.decision)),
        ("part/score", number(Some(p.score))),
    ])
}
