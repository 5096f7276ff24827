//! The notifier Lambda: a batch of STATUS's DynamoDB stream → status-change events on the
//! stack's EventBridge bus (`TIDEMARK_CHANGE_BUS`).

use std::sync::Arc;

use tidemark::adapters::eventbridge::EventBridgePublisher;
use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::config::change_bus_from_env;
use tidemark::consumers::notifier::ChangeNotifier;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark::telemetry::init_tracing(true);
    let bus = change_bus_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let client = aws_sdk_eventbridge::Client::new(&sdk);
    let notifier = ChangeNotifier::new(Arc::new(EventBridgePublisher::new(client, bus)));
    let notifier = &notifier;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<aws_lambda_events::event::dynamodb::Event>| async move {
            let (response, report) =
                tidemark_processor::notifier::handle(notifier, event.payload).await?;
            tracing::info!(
                published = report.outcome.published,
                not_changes = report.outcome.not_changes,
                unreadable = report.unreadable,
                failed_from = report.outcome.first_failed.as_deref(),
                "status changes"
            );
            Ok::<_, lambda_runtime::Error>(response)
        },
    ))
    .await
}
