/*
 * Constants of the KDS session model that come from the Go code. Do not edit
 * by hand: engine/internal/mux's TestModelParams compares every value with
 * the Go constant it names and fails when they disagree; run
 *   go test ./engine/internal/mux -run TestModelParams -update-model
 * to rewrite this file from the Go code.
 */

/* kdssync.DefaultWindow: responses per type a server keeps in flight */
#define WINDOW 3

/* mux.DefaultHeadroom: extra slots of every send buffer and inbound queue */
#define HEADROOM 16

/* mux.Params: every send buffer and inbound queue holds types x window + headroom */
#define CAPACITY(types) ((types) * WINDOW + HEADROOM)
