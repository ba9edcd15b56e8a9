/* participant.h: the example saga participant (a bank holding accounts in its own PostgreSQL
 * database, every call behind the idempotency barrier), for the tests and the benchmark.
 *
 *   dengbao saga participant --db CONNINFO --listen 127.0.0.1:PORT --bank NAME
 *                            [--faults] [--workers N] [--barrier pg|memory]
 *
 * saga_participant_main parses those arguments (argv[0] is "participant"), serves until SIGINT
 * or SIGTERM and returns an exit status: 0 after a clean stop, 2 on a usage error, 3 when the
 * database or the listener cannot be set up. See participant.c for the endpoints and faults.
 */
#ifndef DENGBAO_SAGA_PARTICIPANT_H
#define DENGBAO_SAGA_PARTICIPANT_H

int saga_participant_main(int argc, char **argv);

#endif /* DENGBAO_SAGA_PARTICIPANT_H */
