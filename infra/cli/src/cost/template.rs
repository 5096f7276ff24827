//! The template's defaults the cost model needs (memory sizes, batch size, how many enhanced
//! fan-out consumers and alarms), read from `template.yaml` itself so that the model follows
//! the template rather than a copy of its numbers.

/// The template, bundled at build time.
pub const TEMPLATE: &str = include_str!("../../../../template.yaml");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateDefaults {
    pub ingest_memory_mb: u32,
    /// The processor, archiver and status view all run at `ProcessorMemorySize`.
    pub consumer_memory_mb: u32,
    pub batch_size: usize,
    pub efo_consumers: u32,
    pub alarms: u32,
    /// The notifier's memory and its mapping's batch size (changes per invocation).
    pub notifier_memory_mb: u32,
    pub notifier_batch_size: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("template.yaml has no numeric default for {0}")]
pub struct MissingDefault(pub &'static str);

impl TemplateDefaults {
    pub fn bundled() -> Result<Self, MissingDefault> {
        Self::parse(TEMPLATE)
    }

    pub fn parse(template: &str) -> Result<Self, MissingDefault> {
        let count = |kind: &str| {
            template
                .lines()
                .filter(|line| line.trim() == format!("Type: {kind}"))
                .count() as u32
        };
        Ok(Self {
            ingest_memory_mb: parameter_default(template, "IngestMemorySize")?,
            consumer_memory_mb: parameter_default(template, "ProcessorMemorySize")?,
            batch_size: parameter_default(template, "BatchSize")? as usize,
            efo_consumers: count("AWS::Kinesis::StreamConsumer"),
            alarms: alarms_with_conditions(template)
                .iter()
                .filter(|(_, condition)| {
                    condition
                        .as_deref()
                        .is_none_or(|c| ON_BY_DEFAULT.contains(&c))
                })
                .count() as u32,
            notifier_memory_mb: resource_property(template, "NotifierFunction", "MemorySize")?,
            notifier_batch_size: resource_property(template, "NotifierEventSource", "BatchSize")?,
        })
    }
}

/// The conditions true with the template's defaults, for the alarms a default deploy has:
/// `StatusChangeEvents` is true by default; `KafkaSource` is `none`, so `ReadKafka`'s alarm is
/// not there.
const ON_BY_DEFAULT: [&str; 1] = ["ChangeEventsOn"];

/// The logical ids of the template's alarms (CloudFormation names each alarm
/// `<stack>-<logical id>-<suffix>`), except those under a `Condition:` (they exist only when
/// their feature is on, e.g. the notifier's with `StatusChangeEvents`).
pub fn alarm_logical_ids(template: &str) -> Vec<String> {
    alarms_with_conditions(template)
        .into_iter()
        .filter_map(|(id, condition)| condition.is_none().then_some(id))
        .collect()
}

/// Every alarm's logical id, with the condition it exists under, if any.
fn alarms_with_conditions(template: &str) -> Vec<(String, Option<String>)> {
    let mut alarms = Vec::new();
    // The resource being read: its logical id, whether it is an alarm, its condition.
    let mut current: Option<(String, bool, Option<String>)> = None;
    let mut finish = |resource: Option<(String, bool, Option<String>)>| {
        if let Some((id, true, condition)) = resource {
            alarms.push((id, condition));
        }
    };
    for line in template.lines() {
        if let Some(name) = line
            .strip_prefix("  ")
            .and_then(|rest| rest.strip_suffix(':'))
            .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            finish(current.replace((name.to_owned(), false, None)));
        } else if let Some((_, alarm, condition)) = current.as_mut() {
            if line == "    Type: AWS::CloudWatch::Alarm" {
                *alarm = true;
            } else if let Some(name) = line.strip_prefix("    Condition:") {
                *condition = Some(name.trim().to_owned());
            }
        }
    }
    finish(current);
    alarms
}

/// A number a resource sets itself (`      Property: 100` under `  Resource:`).
fn resource_property(
    template: &str,
    resource: &'static str,
    property: &'static str,
) -> Result<u32, MissingDefault> {
    let header = format!("  {resource}:");
    let mut lines = template.lines().skip_while(|line| *line != header);
    lines.next().ok_or(MissingDefault(resource))?;
    lines
        .take_while(|line| line.starts_with("    ") || line.trim().is_empty())
        .find_map(|line| line.strip_prefix(&format!("      {property}:")))
        .and_then(|value| value.trim().parse().ok())
        .ok_or(MissingDefault(property))
}

/// The `Default:` of a top-level parameter (`  Name:` under `Parameters:`).
fn parameter_default(template: &str, name: &'static str) -> Result<u32, MissingDefault> {
    let header = format!("  {name}:");
    let mut lines = template.lines().skip_while(|line| *line != header);
    lines.next().ok_or(MissingDefault(name))?;
    lines
        .take_while(|line| line.starts_with("    ") || line.trim().is_empty())
        .find_map(|line| line.trim().strip_prefix("Default:"))
        .and_then(|value| value.trim().trim_matches('"').parse().ok())
        .ok_or(MissingDefault(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bundled_template_gives_every_figure() {
        let defaults = TemplateDefaults::bundled().unwrap();
        assert_eq!(defaults.batch_size, 1000);
        assert!(defaults.ingest_memory_mb >= 128 && defaults.consumer_memory_mb >= 128);
        assert_eq!(defaults.efo_consumers, 1, "the status view's consumer");
        assert_eq!(
            (defaults.notifier_memory_mb, defaults.notifier_batch_size),
            (128, 100)
        );
        assert!(defaults.alarms > 0);
        let ids = alarm_logical_ids(TEMPLATE);
        // A default deploy's: the unconditional ones and the notifier's (StatusChangeEvents is
        // on by default), not the Kafka one (KafkaSource is none).
        assert_eq!(ids.len() as u32 + 1, defaults.alarms, "{ids:?}");
        let conditional = alarms_with_conditions(TEMPLATE);
        assert!(conditional.contains(&(
            "KafkaOffsetLagAlarm".to_owned(),
            Some("ReadKafka".to_owned())
        )));
        assert!(ids.iter().all(|id| id.ends_with("Alarm")), "{ids:?}");
        assert!(
            !ids.iter().any(|id| id == "NotifierIteratorAgeAlarm"),
            "{ids:?}"
        );
        assert!(ids.iter().any(|id| id == "OnFailureQueueAlarm"), "{ids:?}");
    }

    #[test]
    fn a_parameter_without_a_default_is_named() {
        let template = "Parameters:\n  BatchSize:\n    Type: Number\n  Other:\n    Default: 3\n";
        assert_eq!(
            parameter_default(template, "BatchSize").unwrap_err().0,
            "BatchSize"
        );
    }
}
