//! `pullsecret` CLI entry: parse arguments, run the subcommand, print one clear error line.

fn main() -> std::process::ExitCode {
    pullsecret::cli::main()
}
