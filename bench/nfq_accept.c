/* The bare C NFQUEUE consumer: the baseline of bench/throughput.py. It binds a queue, copies only
 * the headers, lets the kernel hand over GSO super-packets whole, accepts every packet and counts
 * it; on SIGTERM it prints the count. Nothing slipsq-specific: what libnetfilter_queue costs alone.
 *
 *   cc -O2 -o nfq_accept nfq_accept.c -lnetfilter_queue -lnfnetlink  ./nfq_accept QUEUE_NUM
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stop;
static unsigned long long count;

static void on_term(int sig) { (void)sig; stop = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *m, struct nfq_data *d, void *data) {
    (void)m; (void)data;
    struct nfqnl_msg_packet_hdr *h = nfq_get_msg_packet_hdr(d);
    count++;
    return nfq_set_verdict(qh, ntohl(h->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv) {
    static char buf[131072];
    struct nfq_handle *h = nfq_open();
    struct nfq_q_handle *qh;
    struct sigaction sa = {0};
    int fd, n;
    if (argc != 2 || h == NULL) { fprintf(stderr, "usage: nfq_accept QUEUE (as root)\n"); return 2; }
    qh = nfq_create_queue(h, (uint16_t)atoi(argv[1]), on_packet, NULL);
    if (qh == NULL || nfq_set_mode(qh, NFQNL_COPY_PACKET, 128) < 0) { perror("nfq_create_queue"); return 1; }
    nfq_set_queue_maxlen(qh, 4096);
    nfq_set_queue_flags(qh, NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 4096 * 2048);
    sa.sa_handler = on_term;  /* no SA_RESTART: recv returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    fd = nfq_fd(h);
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        n = recv(fd, buf, sizeof buf, 0);
        if (n >= 0) nfq_handle_packet(h, buf, n);
        else if (errno != EINTR && errno != ENOBUFS) { perror("recv"); break; }
    }
    nfq_destroy_queue(qh);
    nfq_close(h);
    printf("%llu\n", count);
    return 0;
}
