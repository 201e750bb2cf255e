#ifndef BERTH_NSEXEC_H
#define BERTH_NSEXEC_H
extern int berth_exec_process_fd;
extern int berth_exec_joined;
extern int berth_exec_config_fd;
#endif
