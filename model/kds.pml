/*
 * One KDS session between a zone (peer 0) and global (peer 1): the single
 * bidirectional gRPC stream, the HTTP/2 flow control under it, and on each
 * side the goroutines of package mux and the delta-xDS server and client of
 * package kdssync that run on it. docs/decisions/0013-spin-model.md says what
 * is modelled, what is abstracted and which bounds are checked; `make model`
 * runs every check.
 *
 * One model, two designs:
 *   default  the engine (engine/internal/mux): the receive loop only
 *            enqueues into bounded inbound queues, handlers only enqueue
 *            into bounded send buffers, a full queue or buffer ends the
 *            session, one send loop per side calls Send.
 *   -DNAIVE  receive, handle, hand the reply to a size-1 send buffer
 *            (blocking while it is full), receive again; no send timeout
 *            (package naive under engine/internal/testsupport is the same
 *            design in Go).
 *
 * Further switches:
 *   -DSEND_TIMER=0  the engine without its send timeout: deadlock freedom
 *                   must not depend on the timeout.
 *   -DVIOLATOR      global's server may ignore the window and keep sending
 *                   responses before their ACKs (a peer breaking the
 *                   protocol); sets the ghost flag `violated`.
 *   -DRECV_BLOCKS   the engine with its mechanism removed: the receive loop
 *                   answers a response inline and waits until the send
 *                   loop has sent the answer before it receives again.
 *                   With -DSEND_TIMER=0, spin must find the deadlock again.
 *   -DTYPES=n -DBURST=n -DSTREAM_WIN=n -DCONN_WIN=n  the bounds.
 */

#include "params.pml"

/* The overflow checks lower the headroom (down to 0, the smallest capacity
 * the formula gives) so that a violating peer overflows within reach of an
 * exhaustive search; every other check uses the Go value. */
#ifdef HEADROOM_OVERRIDE
#undef HEADROOM
#define HEADROOM HEADROOM_OVERRIDE
#endif

/* Types each side serves; the peer subscribes to all of them. Both sides
 * have the same count, so all four queues of a side have one capacity. */
#ifndef TYPES
#define TYPES 1
#endif
/* Responses per type a server has to send (an initial sync split into
 * BURST responses). More than WINDOW, so the window fills and reopens. */
#ifndef BURST
#define BURST 4
#endif
/* HTTP/2 windows, in messages: the stream window (credit returned when the
 * application reads, grpc-go's onRead) and the connection window (credit
 * returned when the transport reads the frame, grpc-go's onData). */
#ifndef STREAM_WIN
#define STREAM_WIN 2
#endif
#ifndef CONN_WIN
#define CONN_WIN 1
#endif
#ifndef SEND_TIMER
#ifdef NAIVE
#define SEND_TIMER 0
#else
#define SEND_TIMER 1
#endif
#endif

#define CAP CAPACITY(TYPES)

mtype = { SUB, ACK, RESP };

/* How the session ended (one session, so one cause for both sides: when
 * one side ends it the stream ends, and the other side's Recv fails). */
#define RUNNING      0
#define BUFFER_FULL  1 /* mux.ErrBufferFull */
#define INBOUND_FULL 2 /* mux.ErrInboundFull */
#define SEND_TIMEOUT 3 /* mux.ErrSendTimeout */
byte err = RUNNING;
byte errSide;

/* HTTP/2, per direction; index = sending peer. conn: frames on the
 * connection not yet read by the receiving transport (connection window).
 * strm: the stream's receive buffer, read by the application's Recv; a
 * sender has stream credit while conn + strm hold fewer than STREAM_WIN. */
chan conn[2] = [CONN_WIN] of { mtype, byte };
chan strm[2] = [STREAM_WIN] of { mtype, byte };

#ifdef NAIVE
/* The naive peer's one size-1 send buffer. */
chan out[2] = [1] of { mtype, byte };
#define SRV_OUT(p) out[p]
#define CLI_OUT(p) out[p]
#else
/* mux: per logical stream a send buffer and an inbound queue, each
 * TYPES x WINDOW + HEADROOM messages. srv = the stream this side serves
 * (sends responses, receives requests), cli = the one it subscribes on. */
chan srvOut[2] = [CAP] of { mtype, byte };
chan cliOut[2] = [CAP] of { mtype, byte };
chan srvIn[2] = [CAP] of { mtype, byte };
chan cliIn[2] = [CAP] of { mtype, byte };
#define SRV_OUT(p) srvOut[p]
#define CLI_OUT(p) cliOut[p]
#endif

/* kdssync.Server's view per (peer, type), index p*TYPES+t. */
byte inflight[2 * TYPES];
byte left[2 * TYPES];

/* Ghosts for the properties. */
byte enq[2];    /* messages handed to a send buffer by side p */
byte sent[2];   /* messages whose Send returned on side p */
bit inSend[2];  /* side p's send loop is inside Stream.Send */
bit violated;   /* a server sent more than WINDOW responses of a type before their answers */

#define overflow (err == BUFFER_FULL || err == INBOUND_FULL)
#define drained (enq[0] == sent[0] && enq[1] == sent[1])

/* Hand (k, t) to q, a send buffer of side p. The engine never waits: a
 * full buffer ends the session (mux's enqueue). The naive design waits for
 * room, and stops waiting when the session ends. */
inline enqueue(q, p, k, t) {
#ifdef NAIVE
	if
	:: atomic { q!k,t -> enq[p]++; printf("EV %e %d enqueued by %d\n", k, t, p) }
	:: err != RUNNING
	fi
#else
	atomic {
		if
		:: err != RUNNING
		:: else ->
			if
			:: len(q) < CAP -> q!k,t; enq[p]++; printf("EV %e %d enqueued by %d\n", k, t, p)
			:: else -> err = BUFFER_FULL; errSide = p; printf("EV send buffer full on %d\n", p)
			fi
		fi
	}
#endif
}

/* kdssync.Server.handle for a request (k, t) received by side p: a
 * subscription starts the type, an ACK frees its slot; then trySend sends
 * while fewer than WINDOW responses are in flight. */
inline serve(p, k, t) {
	i = p * TYPES + t;
	if
	:: k == ACK -> assert(inflight[i] > 0); inflight[i]--
	:: else
	fi;
	do
	:: err == RUNNING && left[i] > 0 && inflight[i] < WINDOW ->
		enqueue(SRV_OUT(p), p, RESP, t); left[i]--; inflight[i]++
#ifdef VIOLATOR
	:: p == 1 && err == RUNNING && left[i] > 0 && inflight[i] >= WINDOW ->
		violated = 1; enqueue(SRV_OUT(p), p, RESP, t); left[i]--; inflight[i]++
#endif
	:: !(err == RUNNING && left[i] > 0 && inflight[i] < WINDOW) -> break
	od;
	i = 0
}

/*
 * Every goroutine below waits at a label starting with "end" for its next
 * piece of work, and only while the session runs. Once the session has
 * ended, a goroutine blocked elsewhere (inside Send, or waiting for room in
 * a naive send buffer) gets out and goes back to its wait, where it stays:
 * in Go it returns from there. A state where every goroutine sits at its
 * wait is a valid end state (the session finished, or ended and joined
 * everything); one where a goroutine is stuck elsewhere is spin's "invalid
 * end state", a deadlock. Locals are reset after each step so that they
 * do not split states.
 */

/* grpc-go's transport reader on the receiving side of direction d: takes
 * frames off the connection (returning connection credit, grpc-go's
 * onData) into the stream's receive buffer. It never waits for the
 * application. */
proctype transport(byte d) {
	mtype k; byte t;
end:
	do
	:: atomic { err == RUNNING && len(conn[d]) > 0 -> conn[d]?k,t; strm[d]!k,t; k = 0; t = 0 }
	od
}

/* mux.Session.sendLoop: the only caller of Stream.Send on side p. Takes
 * turns between the two send buffers. Send blocks while the stream or the
 * connection window has no credit, and returns when the session ends. */
proctype sendLoop(byte p) {
	mtype k; byte t; bit turn;
end:
	do
	:: atomic {
		err == RUNNING && (len(SRV_OUT(p)) > 0 || len(CLI_OUT(p)) > 0) ->
		if
		:: turn == 0 && len(SRV_OUT(p)) > 0 -> SRV_OUT(p)?k,t
		:: turn == 0 && len(SRV_OUT(p)) == 0 -> CLI_OUT(p)?k,t
		:: turn == 1 && len(CLI_OUT(p)) > 0 -> CLI_OUT(p)?k,t
		:: turn == 1 && len(CLI_OUT(p)) == 0 -> SRV_OUT(p)?k,t
		fi;
		turn = 1 - turn;
		inSend[p] = 1;
		printf("EV %e %d Send starts on %d\n", k, t, p)
	   };
in_send:
		if
		:: atomic {
			len(conn[p]) + len(strm[p]) < STREAM_WIN && len(conn[p]) < CONN_WIN ->
			conn[p]!k,t; sent[p]++; inSend[p] = 0; printf("EV %e %d sent by %d\n", k, t, p); k = 0; t = 0
		   }
		:: atomic { err != RUNNING -> inSend[p] = 0; k = 0; t = 0 }
		fi
	od
}

/* The send timer of side p (mux.Session.checkSendTimeout): fires at a
 * moment nobody controls while the send loop is inside Send, and ends the
 * session with ErrSendTimeout. */
proctype sendTimer(byte p) {
end:
	atomic { inSend[p] && err == RUNNING -> err = SEND_TIMEOUT; errSide = p; printf("EV send timeout on %d\n", p) }
}

#ifdef NAIVE
/* The naive receive loop: receive, handle inline, wait until the reply is
 * in the send buffer, receive again. */
proctype recvLoop(byte p) {
	mtype k; byte t, i;
end:
	do
	:: atomic { err == RUNNING && len(strm[1 - p]) > 0 -> strm[1 - p]?k,t; printf("EV %e %d received by %d\n", k, t, p) };
		if
		:: k == RESP -> enqueue(CLI_OUT(p), p, ACK, t)
		:: else -> serve(p, k, t)
		fi;
		k = 0; t = 0
	od
}
#else
/* Put (k, t) into q, an inbound queue of side p, without waiting; a full
 * queue means the peer broke the protocol and ends the session. */
inline put(q, p, k, t) {
	if
	:: len(q) < CAP -> q!k,t
	:: else -> err = INBOUND_FULL; errSide = p; printf("EV inbound queue full on %d\n", p)
	fi
}

/* mux.Session.recvLoop: the only caller of Stream.Recv on side p. Routes by
 * kind (requests to the served stream, responses to the subscribed one)
 * and never waits for anything but Recv. */
proctype recvLoop(byte p) {
	mtype k; byte t, mine;
end:
	do
#ifdef RECV_BLOCKS
	:: atomic { err == RUNNING && len(strm[1 - p]) > 0 -> strm[1 - p]?k,t; printf("EV %e %d received by %d\n", k, t, p) };
		if
		:: k == RESP ->
			/* the removed mechanism: answer inline and wait until the
			 * send loop has sent the answer before receiving again */
			enqueue(CLI_OUT(p), p, ACK, t);
			mine = enq[p];
			(sent[p] >= mine || err != RUNNING)
		:: else -> atomic { put(srvIn[p], p, k, t) }
		fi;
		k = 0; t = 0; mine = 0
#else
	:: atomic {
		err == RUNNING && len(strm[1 - p]) > 0 -> strm[1 - p]?k,t;
		printf("EV %e %d received by %d\n", k, t, p);
		if
		:: k == RESP -> put(cliIn[p], p, k, t)
		:: else -> put(srvIn[p], p, k, t)
		fi;
		k = 0; t = 0
	   }
#endif
	od
}

/* kdssync.Server.Serve on side p: takes the peer's next request off the
 * served stream's inbound queue and handles it. A step only enqueues, so
 * it is one atomic step here. */
proctype server(byte p) {
	mtype k; byte t, i;
end:
	do
	:: atomic { err == RUNNING && len(srvIn[p]) > 0 -> srvIn[p]?k,t; serve(p, k, t); k = 0; t = 0 }
	od
}

/* kdssync.Client.Run on side p: takes the peer's next response off the
 * subscribed stream's inbound queue, checks and applies it, and ACKs it.
 * In Go these are two goroutines (check; apply and answer) joined by a
 * one-slot channel; neither touches the transport except by enqueueing
 * the ACK, so they are one atomic step here. */
proctype client(byte p) {
	mtype k; byte t;
end:
	do
	:: atomic { err == RUNNING && len(cliIn[p]) > 0 -> cliIn[p]?k,t; enqueue(CLI_OUT(p), p, ACK, t); k = 0; t = 0 }
	od
}
#endif

/* kdssync.Client.Run's start on side p: one subscription per type. */
proctype subscriber(byte p) {
	byte t;
	do
	:: t < TYPES -> enqueue(CLI_OUT(p), p, SUB, t); t++
	:: else -> break
	od
}

/* When nothing can move any more, the session must have ended with an
 * error or have finished everything: every response sent and answered,
 * every message enqueued sent. If not, this process stays blocked outside
 * an end label, so a stall where every goroutine waits at its wait point
 * is an invalid end state too, not hidden by the end labels above. */
proctype finished() {
	byte i;
	bit done = 1;
	timeout ->
	d_step {
		do
		:: i < 2 * TYPES -> done = done && left[i] == 0 && inflight[i] == 0; i++
		:: else -> break
		od;
		done = done && drained;
		i = 0
	};
	(err != RUNNING || done)
}

init {
	byte i;
	atomic {
		do
		:: i < 2 * TYPES -> left[i] = BURST; i++
		:: else -> break
		od;
		i = 0;
		run transport(0); run transport(1);
		run sendLoop(0); run sendLoop(1);
		run recvLoop(0); run recvLoop(1);
#if SEND_TIMER
		run sendTimer(0); run sendTimer(1);
#endif
#ifndef NAIVE
		run server(0); run server(1);
		run client(0); run client(1);
#endif
		run finished();
		run subscriber(0); run subscriber(1)
	}
}

/* Every message handed to a send buffer is eventually sent, or the session
 * has ended with an error. */
ltl delivered { [] (!drained -> <> (drained || err != RUNNING)) }

/* A session that ends with a full buffer or queue was sent more than the
 * protocol allows. */
ltl overflow_means_violation { [] (overflow -> violated) }

/* Non-vacuity: an overflow is reachable at all (violated with -DVIOLATOR). */
ltl no_overflow { [] !overflow }
