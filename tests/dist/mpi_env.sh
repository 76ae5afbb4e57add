# Sourced by the multi-rank tests: run_ranks NP CMD... runs CMD on NP local ranks with Open MPI
# (as root too, more ranks than cores allowed, shared-memory transport only), passing on the
# engine's BERT_* test variables that are set.
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
run_ranks() {
  local np=$1; shift
  local extra=()
  [ "$(id -u)" -eq 0 ] && extra+=(--allow-run-as-root)
  for v in BERT_COMM_TIMEOUT BERT_COMM_FAULT BERT_TEST_MISMATCH; do
    [ -n "${!v:-}" ] && extra+=(-x "$v")
  done
  mpirun "${extra[@]}" --oversubscribe --bind-to none --mca btl self,vader -np "$np" "$@"
}
