// Package kdsv1 holds the generated code for the KDS wire protocol
// (proto/kds/v1/kds.proto): the Session service a zone dials, the Message
// envelope multiplexed on it, and the Resource envelope synced inside
// google.protobuf.Any. Regenerate with `make proto`.
package kdsv1
