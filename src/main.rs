fn main() -> std::process::ExitCode {
    rivet::cli::main()
}
