// A C++ abstraction over epoll: standalone asio, one io_context per CPU in the affinity mask,
// each run by one thread with its own SO_REUSEPORT acceptor; completion handlers per session.
#include <asio.hpp>

#include <sched.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

using asio::ip::tcp;
using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

constexpr int backlog = 4096;
constexpr std::size_t read_chunk = 4096; // a multiple of 4, so one read's replies fit in it

[[noreturn]] static void usage()
{
	std::fprintf(stderr, "usage: cpp-asio -p PORT [-a ADDRESS]\n");
	std::exit(2);
}

// "-p PORT [-a ADDRESS]": PORT a decimal in 1..65535, ADDRESS an IPv4 address (default
// 127.0.0.1).
static tcp::endpoint parse_args(int argc, char **argv)
{
	asio::ip::address_v4 address = asio::ip::address_v4::loopback();
	long port = 0;
	int opt;
	opterr = 0; // one line on a bad flag: ours
	while ((opt = getopt(argc, argv, "p:a:")) != -1) {
		char *end;
		std::error_code ec;
		switch (opt) {
		case 'p':
			errno = 0;
			port = std::strtol(optarg, &end, 10);
			if (optarg[0] < '0' || optarg[0] > '9' || errno != 0 || *end != '\0' ||
			    port < 1 || port > 65535)
				usage();
			break;
		case 'a':
			address = asio::ip::make_address_v4(optarg, ec);
			if (ec) {
				std::fprintf(stderr, "cpp-asio: -a %s is not an IPv4 address\n", optarg);
				std::exit(2);
			}
			break;
		default:
			usage();
		}
	}
	if (port == 0 || optind != argc)
		usage();
	return tcp::endpoint(address, static_cast<unsigned short>(port));
}

class Session : public std::enable_shared_from_this<Session> {
public:
	explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

	void read()
	{
		socket_.async_read_some(asio::buffer(in_),
			[self = shared_from_this()](std::error_code ec, std::size_t n) {
				if (!ec) // EOF (possibly mid-word) or an error drops the session
					self->answer(n);
			});
	}

private:
	// One reply per complete word, in order; a zero ends the server after the replies before it.
	void answer(std::size_t n)
	{
		std::size_t len = 0;
		for (std::size_t i = 0; i < n; i++) {
			word_[have_++] = in_[i];
			if (have_ < 4)
				continue;
			have_ = 0;
			std::uint32_t x = std::uint32_t(word_[0]) << 24 | std::uint32_t(word_[1]) << 16 |
					  std::uint32_t(word_[2]) << 8 | word_[3];
			if (x == 0) {
				std::error_code ignored;
				asio::write(socket_, asio::buffer(out_.data(), len), ignored);
				std::_Exit(0); // no destructors while the other threads still run
			}
			x += 1;
			out_[len++] = static_cast<unsigned char>(x >> 24);
			out_[len++] = static_cast<unsigned char>(x >> 16);
			out_[len++] = static_cast<unsigned char>(x >> 8);
			out_[len++] = static_cast<unsigned char>(x);
		}
		if (len == 0)
			return read();
		asio::async_write(socket_, asio::buffer(out_.data(), len),
			[self = shared_from_this()](std::error_code ec, std::size_t) {
				if (!ec)
					self->read();
			});
	}

	tcp::socket socket_;
	std::array<unsigned char, read_chunk> in_;
	std::array<unsigned char, read_chunk> out_;
	std::array<unsigned char, 4> word_; // partial word carried over between reads
	std::size_t have_ = 0;
};

class Server {
public:
	Server(const tcp::endpoint &endpoint) : acceptor_(context_), retry_(context_)
	{
		acceptor_.open(tcp::v4());
		acceptor_.set_option(tcp::acceptor::reuse_address(true));
		acceptor_.set_option(reuse_port(true));
		acceptor_.bind(endpoint);
		acceptor_.listen(backlog);
	}

	void run()
	{
		accept();
		context_.run();
	}

private:
	void accept()
	{
		acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
			if (ec) {
				// e.g. EMFILE: back off briefly instead of spinning.
				retry_.expires_after(std::chrono::milliseconds(10));
				retry_.async_wait([this](std::error_code) { accept(); });
				return;
			}
			socket.set_option(tcp::no_delay(true), ec);
			std::make_shared<Session>(std::move(socket))->read();
			accept();
		});
	}

	asio::io_context context_{1}; // concurrency hint: run by exactly one thread
	tcp::acceptor acceptor_;
	asio::steady_timer retry_;
};

int main(int argc, char **argv)
{
	tcp::endpoint endpoint = parse_args(argc, argv);

	cpu_set_t set;
	int ncpu = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
	if (ncpu < 1)
		ncpu = 1;

	std::vector<std::unique_ptr<Server>> servers;
	try {
		// SO_REUSEPORT would silently share the port with a stale listener of the same user;
		// make sure the port is actually free first.
		asio::io_context probe_context;
		tcp::acceptor probe(probe_context);
		probe.open(tcp::v4());
		probe.set_option(tcp::acceptor::reuse_address(true));
		probe.bind(endpoint);
		probe.close();
		// Bind every acceptor before serving, so errors show up front.
		for (int i = 0; i < ncpu; i++)
			servers.push_back(std::make_unique<Server>(endpoint));
	} catch (const std::system_error &e) {
		std::fprintf(stderr, "cpp-asio: cannot listen on %s:%u: %s\n",
			     endpoint.address().to_string().c_str(), endpoint.port(), e.what());
		return 1;
	}

	// The first server runs on the main thread; the others get threads of their own.
	std::vector<std::thread> threads;
	for (int i = 1; i < ncpu; i++)
		threads.emplace_back([&server = *servers[i]] { server.run(); });
	servers[0]->run();
	for (auto &t : threads)
		t.join();
}
