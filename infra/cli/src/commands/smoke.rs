//! `tidemark smoke URL`: the post-deploy check (see `tidemark_cli::smoke`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tidemark::adapters::sdk::load_sdk_config;
use tidemark_cli::cost::template::{alarm_logical_ids, TEMPLATE};
use tidemark_cli::smoke::{check_alarms, Auth, Smoke};

use super::fail;

#[derive(Clone, Copy, ValueEnum)]
enum AuthMode {
    /// No credentials (`serve`, or a stack deployed with AuthMode NONE).
    None,
    /// SigV4 with the environment's AWS credentials and region (AuthMode IAM, the default).
    Iam,
    /// `Authorization: Bearer $TIDEMARK_SMOKE_TOKEN` (AuthMode JWT), a token with the write
    /// and read scopes.
    Jwt,
}

#[derive(Args)]
pub struct SmokeArgs {
    /// The API's base URL: the stack's `ApiUrl` output, or `http://127.0.0.1:3000` for `serve`.
    url: String,
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    auth: AuthMode,
    #[arg(long, env = "TIDEMARK_SMOKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The deployed stack's name: also check that each of the template's alarms exists.
    #[arg(long)]
    stack: Option<String>,
    /// Waiting reads (each up to 5 s, or 0.5 s for history) before a step gives up.
    #[arg(long, default_value_t = 24)]
    attempts: u32,
}

pub async fn run(args: SmokeArgs) -> ExitCode {
    let needs_sdk = matches!(args.auth, AuthMode::Iam) || args.stack.is_some();
    let sdk = match needs_sdk {
        true => Some(load_sdk_config(None).await),
        false => None,
    };
    let auth = match (args.auth, &sdk) {
        (AuthMode::None, _) => Auth::None,
        (AuthMode::Iam, Some(sdk)) => Auth::Iam(Box::new(sdk.clone())),
        (AuthMode::Iam, None) => return fail(&"--auth iam needs the AWS configuration"),
        (AuthMode::Jwt, _) => match args.token {
            Some(token) => Auth::Bearer(token),
            None => return fail(&"--auth jwt needs a token: set TIDEMARK_SMOKE_TOKEN or --token"),
        },
    };
    let smoke = Smoke {
        base: args.url.clone(),
        auth,
        http: reqwest::Client::new(),
        attempts: args.attempts.max(1),
    };
    if let Err(e) = smoke.run().await {
        return fail(&format!("smoke test of {} failed: {e}", args.url));
    }
    if let (Some(stack), Some(sdk)) = (&args.stack, &sdk) {
        if let Err(e) = check_alarms(sdk, stack, &alarm_logical_ids(TEMPLATE)).await {
            return fail(&format!("smoke test of {stack} failed: {e}"));
        }
    }
    println!("smoke test of {} passed", args.url);
    ExitCode::SUCCESS
}
